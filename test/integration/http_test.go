package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// metricValue returns the value of an unlabelled (or fully written) series from a /metrics page.
func metricValue(page, series string) (float64, bool) {
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(l, series+" ")), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// What a Kubernetes probe and a Prometheus scrape see: /readyz turns ready once the backfill is done and the
// stream is current; /metrics counts exactly the rows copied; POST /pause shows up as a gauge.
func TestRunServesProbesAndMetrics(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, _ := p.src.Open("")
	defer src.Close()
	gen, err := harness.GenerateCSMH(ctx, src, harness.SourceTable, harness.GenOptions{Rows: 5000, Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	d := startRun(t, p, "--metrics-addr", addr)
	var page string
	harness.Eventually(t, time.Minute, "/readyz 200", func() (bool, error) {
		code, _, err := get(base + "/readyz")
		return code == 200, err
	})
	if code, body, err := get(base + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz %d %q %v", code, body, err)
	}
	harness.Eventually(t, 10*time.Second, "metrics show the copy", func() (bool, error) {
		_, page, err = get(base + "/metrics")
		v, ok := metricValue(page, "csmh_sync_backfill_rows_copied_total")
		return ok && v == float64(gen.Rows), err
	})
	for _, series := range []string{"csmh_sync_replication_connected", "csmh_sync_backfill_progress_ratio", "csmh_sync_backfill_done"} {
		if v, ok := metricValue(page, series); !ok || v != 1 {
			t.Errorf("%s = %v (present %v), want 1", series, v, ok)
		}
	}
	for _, series := range []string{"csmh_sync_replication_lag_seconds", "csmh_sync_id_runway_ids", "csmh_sync_source_id_used_ratio"} {
		if _, ok := metricValue(page, series); !ok {
			t.Errorf("%s missing from /metrics", series)
		}
	}
	if !strings.Contains(page, "csmh_sync_build_info{") {
		t.Error("build info missing")
	}
	resp, err := http.Post(base+"/pause", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /pause: %v %v", resp, err)
	}
	resp.Body.Close()
	_, page, _ = get(base + "/metrics")
	if v, _ := metricValue(page, "csmh_sync_backfill_paused"); v != 1 {
		t.Fatalf("paused gauge %v after POST /pause", v)
	}
	if code, _, _ := get(base + "/pause"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /pause answered %d, want 405", code)
	}
	// A second process on the same target table is refused before it writes anything; the first one goes on.
	for _, cmd := range []string{"run", "backfill"} {
		r := csmh(t, 30*time.Second, nil, append([]string{cmd}, p.args("--server-id", "1043")...)...)
		if r.code == 0 || !strings.Contains(r.stderr, "another csmh-sync") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Fatalf("second %s: exit %d, stderr %q; want a one-line refusal", cmd, r.code, r.stderr)
		}
	}
	if code, _, err := get(base + "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz %d %v after the refused second process", code, err)
	}
	_ = d
}
