package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// postWith POSTs with the given headers and returns the status code.
func postWith(t *testing.T, url string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
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

// What a Kubernetes probe and a Prometheus scrape see: /readyz refuses (with the reason) while the backfill
// runs and turns ready once it is done and the stream is current; /metrics counts exactly the rows copied and
// the changes applied, and its id and retention gauges agree with the servers; POST /pause shows up as a gauge,
// once it carries the token of --admin-token-file and does not come from another origin.
func TestRunServesProbesAndMetrics(t *testing.T) {
	ctx := context.Background()
	const retention = 86400
	p := newPair(t, harness.Options{ExtraArgs: []string{"--binlog-expire-logs-seconds=" + strconv.Itoa(retention)}},
		harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, _, gen := p.seed(t, harness.GenOptions{Rows: 5000, Seed: 41})
	addr := freeAddr(t)
	base := "http://" + addr
	// 5,000 rows at 500 rows/s: the copy outlasts the start of the stream by seconds.
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	const token = "7d3e9a41c0b2-admin"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startRun(t, p, "--metrics-addr", addr, "--max-rows-per-second", "500", "--admin-token-file", tokenFile)
	harness.Eventually(t, time.Minute, "/healthz 200", func() (bool, error) {
		code, _, err := get(base + "/healthz")
		return code == 200, err
	})
	if code, body, err := get(base + "/readyz"); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "backfill not done") {
		t.Fatalf("/readyz during the backfill: %d %q %v; want 503 naming the backfill", code, body, err)
	}
	// So does cutover, the barrier before the read flip.
	if r := csmh(t, time.Minute, nil, append([]string{"cutover", "--timeout", "30s"}, p.args()...)...); r.code != 1 || !hasLine(r.stdout, "NO-GO", "backfill complete") {
		t.Fatalf("cutover during the backfill: exit %d, want 1 with a backfill NO-GO line:\n%s%s", r.code, r.stdout, r.stderr)
	}
	harness.Eventually(t, time.Minute, "/readyz 200", func() (bool, error) {
		code, _, err := get(base + "/readyz")
		return code == 200, err
	})
	var page string
	var err error
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
	if v, _ := metricValue(page, "csmh_sync_backfill_eta_seconds"); v != 0 {
		t.Errorf("ETA %v s after the backfill finished, want 0", v)
	}
	if v, _ := metricValue(page, "csmh_sync_backfill_throttled_seconds_total"); v < 2 {
		t.Errorf("throttled %v s under a 500 rows/s limit for 5,000 rows, want several seconds", v)
	}
	if !strings.Contains(page, "csmh_sync_build_info{") {
		t.Error("build info missing")
	}

	// Live changes after the copy: each reaches the target through the stream and is counted once, by kind.
	for i := range 7 {
		if _, err := src.Exec(`INSERT INTO `+harness.SourceTable+` (version, created, state, grade, max_grade, student_module_id)
			VALUES (NULL, UTC_TIMESTAMP(6), ?, 1, 2, ?)`, `{"attempts": 1}`, 900+i); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE ` + harness.SourceTable + ` SET grade = 2 WHERE id IN (10, 20, 30)`,
		`DELETE FROM ` + harness.SourceTable + ` WHERE id IN (40, 50)`,
	} {
		if res, err := src.Exec(q); err != nil {
			t.Fatal(err)
		} else if n, _ := res.RowsAffected(); n == 0 {
			t.Fatalf("%s changed no row", q)
		}
	}
	var autoInc float64
	if err := src.QueryRow(`SELECT AUTO_INCREMENT FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = 'edxapp' AND TABLE_NAME = 'courseware_studentmodulehistory'`).Scan(&autoInc); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`csmh_sync_replication_applied_rows_total{op="insert"}`: 7,
		`csmh_sync_replication_applied_rows_total{op="update"}`: 3,
		`csmh_sync_replication_applied_rows_total{op="delete"}`: 2,
		"csmh_sync_replication_transactions_behind":             0,
		"csmh_sync_replication_lag_seconds":                     0,
		"csmh_sync_checkpoint_age_seconds":                      0,
		// Ids are probed every 10 s.
		"csmh_sync_source_id_used_ratio": autoInc / 2147483647,
		"csmh_sync_id_runway_ids":        1_000_000 - autoInc,
	}
	harness.Eventually(t, 30*time.Second, "metrics show the live changes", func() (bool, error) {
		if _, page, err = get(base + "/metrics"); err != nil {
			return false, err
		}
		for series, v := range want {
			if got, ok := metricValue(page, series); !ok || got != v {
				return false, fmt.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
			}
		}
		return true, nil
	})
	// Caught up, the next binlog the stream needs is the source's next write: the whole retention is ahead.
	if v, ok := metricValue(page, "csmh_sync_binlog_retention_headroom_seconds"); !ok || v > retention || v < retention-60 {
		t.Errorf("retention headroom %v s (present %v) on a source keeping binlogs %d s, want close to it", v, ok, retention)
	}
	// The backfill read the target's redo log before each chunk: a fraction of InnoDB's limit, no longer NaN.
	if v, ok := metricValue(page, "csmh_sync_target_redo_fill_ratio"); !ok || !(v >= 0 && v < 1) {
		t.Errorf("csmh_sync_target_redo_fill_ratio = %v (present %v), want a fraction in [0, 1)", v, ok)
	}
	// A copy of this size leaves the 256 MiB log far from its limit: no chunk waited for the redo guard's trickle.
	if v, ok := metricValue(page, "csmh_sync_backfill_redo_trickled_chunks_total"); !ok || v != 0 {
		t.Errorf("csmh_sync_backfill_redo_trickled_chunks_total = %v (present %v), want 0", v, ok)
	}
	// The latency guard timed the target's commits: a rise (not NaN) and a pause of at most its 2 s bound.
	if v, ok := metricValue(page, "csmh_sync_target_commit_latency_rise_seconds"); !ok || v != v || v > 2 {
		t.Errorf("csmh_sync_target_commit_latency_rise_seconds = %v (present %v), want a measured rise", v, ok)
	}
	if v, ok := metricValue(page, "csmh_sync_backfill_pause_seconds"); !ok || v < 0 || v > 2 {
		t.Errorf("csmh_sync_backfill_pause_seconds = %v (present %v), want a pause within [0, 2] s", v, ok)
	}
	if v, _ := metricValue(page, "csmh_sync_replication_applied_transactions_total"); v < 9 {
		t.Errorf("applied transactions %v, want at least the 9 written after the copy", v)
	}

	// `status` reads the same story from the checkpoint alone (and the source, for what is behind).
	r := csmh(t, 30*time.Second, nil, append([]string{"status", "--json"}, p.args()...)...)
	var st struct {
		Stage      string  `json:"stage"`
		RowsCopied int64   `json:"backfill_rows_copied"`
		Ratio      float64 `json:"backfill_progress_ratio"`
		Behind     int64   `json:"transactions_behind"`
		Lag        float64 `json:"lag_seconds"`
		IDBoundary int64   `json:"id_boundary"`
		Applied    struct{ Inserts, Updates, Deletes int64 }
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if st.Stage != "streaming" || st.RowsCopied != int64(gen.Rows) || st.Ratio != 1 || st.Behind != 0 || st.Lag != 0 ||
		st.IDBoundary != 1_000_000 || st.Applied.Inserts != 7 || st.Applied.Updates != 3 || st.Applied.Deletes != 2 {
		t.Fatalf("status --json after the copy and 12 live changes: %+v", st)
	}
	r = csmh(t, 30*time.Second, nil, "status", "--target-dsn", p.src.DSN(""), "--metrics-addr", "")
	if r.code != 2 || !strings.Contains(r.stderr, "no checkpoint") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("status against a database without a checkpoint: exit %d, stderr %q; want 2 and one line", r.code, r.stderr)
	}
	bearer := "Bearer " + token
	for _, c := range []struct {
		header map[string]string
		want   int
	}{
		{nil, http.StatusUnauthorized},
		{map[string]string{"Authorization": "Bearer " + token[1:]}, http.StatusUnauthorized},
		{map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{map[string]string{"Authorization": bearer, "Origin": "https://evil.example"}, http.StatusForbidden},
	} {
		if code := postWith(t, base+"/pause", c.header); code != c.want {
			t.Fatalf("POST /pause %v answered %d, want %d", c.header, code, c.want)
		}
	}
	_, page, _ = get(base + "/metrics")
	if v, _ := metricValue(page, "csmh_sync_backfill_paused"); v != 0 {
		t.Fatalf("paused gauge %v after refused POSTs", v)
	}
	if code := postWith(t, base+"/pause", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "same-origin", "Origin": base}); code != 200 {
		t.Fatalf("POST /pause with the token answered %d", code)
	}
	_, page, _ = get(base + "/metrics")
	if v, _ := metricValue(page, "csmh_sync_backfill_paused"); v != 1 {
		t.Fatalf("paused gauge %v after POST /pause", v)
	}
	if code, _, _ := get(base + "/pause"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /pause answered %d, want 405", code)
	}
	if code := postWith(t, base+"/resume", map[string]string{"Authorization": bearer}); code != 200 {
		t.Fatalf("POST /resume with the token answered %d", code)
	}
	_, page, _ = get(base + "/metrics")
	if v, _ := metricValue(page, "csmh_sync_backfill_paused"); v != 0 {
		t.Fatalf("paused gauge %v after POST /resume", v)
	}
	// POST /rate changes the copy's limit in the running process; a bad value is refused and changes nothing.
	if code := postWith(t, base+"/rate?rows-per-second=15000", map[string]string{"Authorization": bearer}); code != 200 {
		t.Fatalf("POST /rate with the token answered %d", code)
	}
	if code := postWith(t, base+"/rate?rows-per-second=-1", map[string]string{"Authorization": bearer}); code != http.StatusBadRequest {
		t.Fatalf("POST /rate of -1 rows/s answered %d, want 400", code)
	}
	_, page, _ = get(base + "/metrics")
	if v, ok := metricValue(page, "csmh_sync_backfill_max_rows_per_second"); !ok || v != 15000 {
		t.Fatalf("rate limit gauge %v (present %v) after POST /rate of 15000 and a refused -1", v, ok)
	}
	// The source goes away: /healthz says so (a liveness probe restarts the sidecar only if it stays so);
	// once the source is back the stream reconnects and /healthz recovers.
	if err := p.src.Kill(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "/healthz 503 with the source down", func() (bool, error) {
		code, body, err := get(base + "/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not connected"), err
	})
	if err := p.src.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "/healthz 200 after the source restarted", func() (bool, error) {
		code, _, err := get(base + "/healthz")
		return code == 200, err
	})
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
