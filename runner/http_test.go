package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

type fakeProbe struct {
	paused, resumed atomic.Int32
	mu              sync.Mutex
	rates           []float64 // every SetRate, in order
}

func (p *fakeProbe) Alive() (bool, string) { return true, "ok" }
func (p *fakeProbe) Ready() (bool, string) { return true, "ready" }
func (p *fakeProbe) Pause()                { p.paused.Add(1) }
func (p *fakeProbe) Resume() string        { p.resumed.Add(1); return "backfill resumed" }
func (p *fakeProbe) SetRate(r float64) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rates = append(p.rates, r)
	return fmt.Sprintf("backfill rate limit set to %g rows/s", r)
}

// POST /rate changes the copy's speed: a number of rows per second ≥ 0 goes through; anything else is refused
// with a line naming the form, and changes nothing; it needs the token as /pause does.
func TestRateEndpoint(t *testing.T) {
	const token = "9d2e-admin-token"
	base, p, logs := serve(t, "127.0.0.1:0", token, defaultHTTPTimeouts)
	bearer := map[string]string{"Authorization": "Bearer " + token}
	for _, c := range []call{
		{"POST", "/rate?rows-per-second=15000", nil, 401},
		{"GET", "/rate?rows-per-second=15000", bearer, 405},
		{"POST", "/rate?rows-per-second=15000", map[string]string{"Authorization": "Bearer " + token, "Sec-Fetch-Site": "cross-site"}, 403},
		{"POST", "/rate", bearer, 400},
		{"POST", "/rate?rows-per-second=fast", bearer, 400},
		{"POST", "/rate?rows-per-second=-5", bearer, 400},
		{"POST", "/rate?rows-per-second=NaN", bearer, 400},
		{"POST", "/rate?rows-per-second=Inf", bearer, 400},
	} {
		if code, body := do(t, base, c); code == 400 && !strings.Contains(body, "POST /rate?rows-per-second=15000") {
			t.Errorf("%s: the refusal does not show the form: %q", c.path, body)
		}
	}
	if _, body := do(t, base, call{"POST", "/rate?rows-per-second=15000", bearer, 200}); !strings.Contains(body, "15000 rows/s") {
		t.Errorf("POST /rate answered %q", body)
	}
	do(t, base, call{"POST", "/rate?rows-per-second=0", bearer, 200})
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.rates, []float64{15000, 0}) {
		t.Fatalf("rates set %v, want [15000 0]: only the valid requests with the token", p.rates)
	}
	if !strings.Contains(logs.String(), "by operator") {
		t.Fatalf("the change is not logged:\n%s", logs.String())
	}
}

// serve starts the runner's HTTP server on addr (port 0) and returns its base URL.
func serve(t *testing.T, addr, token string, to httpTimeouts) (string, *fakeProbe, *harness.SyncBuffer) {
	t.Helper()
	ln, err := listenHTTP(addr)
	if err != nil {
		t.Fatal(err)
	}
	logs := &harness.SyncBuffer{}
	p := &fakeProbe{}
	stop := serveHTTP(context.Background(), slog.New(slog.NewTextHandler(logs, nil)), ln, token, to, prometheus.NewRegistry(), p)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "http://127.0.0.1:" + port, p, logs
}

type call struct {
	method, path string
	header       map[string]string // "Host" sets the request's Host
	want         int
}

func do(t *testing.T, base string, c call) (int, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != c.want {
		t.Errorf("%s %s %v: %d %q, want %d", c.method, c.path, c.header, resp.StatusCode, b, c.want)
	}
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, c.path)
	}
	return resp.StatusCode, string(b)
}

// With --admin-token-file, POST /pause and /resume need the token and a request that is not cross-origin; a
// same-origin call with the token works; the GET endpoints stay open. Refusals are logged without the token.
func TestAdminRefusesCrossSiteAndWrongToken(t *testing.T) {
	const token = "4f1c0b7e-admin-token"
	base, p, logs := serve(t, "127.0.0.1:0", token, defaultHTTPTimeouts)
	bearer := "Bearer " + token
	for _, c := range []call{
		{"POST", "/pause", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "cross-site"}, 403},
		{"POST", "/pause", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "same-site"}, 403},
		{"POST", "/resume", map[string]string{"Authorization": bearer, "Origin": "https://evil.example"}, 403},
		{"POST", "/pause", nil, 401},
		{"POST", "/pause", map[string]string{"Authorization": "Bearer wrong"}, 401},
		{"POST", "/pause", map[string]string{"Authorization": "Bearer " + token + "x"}, 401},
		{"POST", "/pause", map[string]string{"Authorization": "Basic " + token}, 401},
		{"POST", "/resume", map[string]string{"Sec-Fetch-Site": "same-origin"}, 401},
		{"GET", "/pause", map[string]string{"Authorization": bearer}, 405},
		// From a host name the server does not know: the token, not the Host, decides.
		{"POST", "/pause", map[string]string{"Authorization": bearer, "Host": "csmh-sync.openedx.svc:9104"}, 200},
	} {
		do(t, base, c)
	}
	if n := p.paused.Load() + p.resumed.Load(); n != 1 {
		t.Fatalf("%d pause/resume calls went through, want only the one with the token", n)
	}
	origin := base // what a page served by csmh-sync itself would send
	do(t, base, call{"POST", "/pause", map[string]string{"Authorization": bearer, "Sec-Fetch-Site": "same-origin", "Origin": origin}, 200})
	do(t, base, call{"POST", "/resume", map[string]string{"Authorization": "bearer " + token}, 200})
	if p.paused.Load() != 2 || p.resumed.Load() != 1 {
		t.Fatalf("paused %d, resumed %d times; want 2 and 1", p.paused.Load(), p.resumed.Load())
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		do(t, base, call{"GET", path, map[string]string{"Sec-Fetch-Site": "cross-site"}, 200})
	}
	l := logs.String()
	if !strings.Contains(l, "admin request refused") || strings.Contains(l, token) {
		t.Fatalf("logs should name the refusals, never the token:\n%s", l)
	}
}

// Without a token, a loopback listener answers POSTs from this host (curl), but not from a web page of another
// origin, nor one that rebound its DNS name to 127.0.0.1 (its Host is that name).
func TestAdminWithoutTokenOnLoopback(t *testing.T) {
	base, p, _ := serve(t, "127.0.0.1:0", "", defaultHTTPTimeouts)
	port := strings.TrimPrefix(base, "http://127.0.0.1:")
	for _, c := range []call{
		{"POST", "/pause", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"POST", "/pause", map[string]string{"Origin": "http://evil.example"}, 403},
		{"POST", "/pause", map[string]string{"Host": "evil.example:" + port, "Origin": "http://evil.example:" + port, "Sec-Fetch-Site": "same-origin"}, 403},
		{"POST", "/resume", map[string]string{"Host": "evil.example:" + port}, 403},
	} {
		do(t, base, c)
	}
	if p.paused.Load()+p.resumed.Load() != 0 {
		t.Fatal("a refused request paused or resumed")
	}
	do(t, base, call{"POST", "/pause", nil, 200})
	do(t, base, call{"POST", "/resume", map[string]string{"Host": "localhost:" + port}, 200})
	do(t, base, call{"POST", "/pause", map[string]string{"Host": "[::1]:" + port, "Sec-Fetch-Site": "none"}, 200})
	if p.paused.Load() != 2 || p.resumed.Load() != 1 {
		t.Fatalf("paused %d, resumed %d times; want 2 and 1", p.paused.Load(), p.resumed.Load())
	}
}

// On a non-loopback address (the image's 0.0.0.0:9104) without a token the POSTs refuse, naming the flag, even
// from this host; /metrics and the probes answer. With a token they work there.
func TestAdminWithoutTokenOnNetworkAddress(t *testing.T) {
	base, p, _ := serve(t, "0.0.0.0:0", "", defaultHTTPTimeouts)
	if _, body := do(t, base, call{"POST", "/pause", nil, 403}); !strings.Contains(body, "--admin-token-file") {
		t.Fatalf("refusal %q does not name --admin-token-file", body)
	}
	do(t, base, call{"POST", "/resume", nil, 403})
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		do(t, base, call{"GET", path, nil, 200})
	}
	if p.paused.Load()+p.resumed.Load() != 0 {
		t.Fatal("a refused request paused or resumed")
	}
	base, p, _ = serve(t, "0.0.0.0:0", "tok", defaultHTTPTimeouts)
	do(t, base, call{"POST", "/pause", map[string]string{"Authorization": "Bearer tok"}, 200})
	if p.paused.Load() != 1 {
		t.Fatal("POST /pause with the token did not pause")
	}
}

// An idle keep-alive connection and a client that never finishes its headers are both closed by the server.
func TestHTTPServerClosesIdleConnections(t *testing.T) {
	to := httpTimeouts{ReadHeader: 200 * time.Millisecond, Read: time.Second, Write: time.Second, Idle: 200 * time.Millisecond}
	base, _, _ := serve(t, "127.0.0.1:0", "", to)
	addr := strings.TrimPrefix(base, "http://")
	closedWithin := func(c net.Conn, r *bufio.Reader, limit time.Duration) {
		t.Helper()
		start := time.Now()
		c.SetReadDeadline(start.Add(10 * time.Second))
		_, err := r.ReadByte()
		if !errors.Is(err, io.EOF) {
			t.Fatalf("read on a connection the server should close: %v, want EOF", err)
		}
		if took := time.Since(start); took > limit {
			t.Fatalf("closed after %s, want within %s", took, limit)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("/healthz: %d, close %v; want a kept-alive 200", resp.StatusCode, resp.Close)
	}
	closedWithin(c, r, 5*time.Second)

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil { // never ends the headers
		t.Fatal(err)
	}
	closedWithin(slow, bufio.NewReader(slow), 5*time.Second)
}

// The production timeouts are all set.
func TestDefaultHTTPTimeouts(t *testing.T) {
	if to := defaultHTTPTimeouts; to.ReadHeader <= 0 || to.Read <= 0 || to.Write <= 0 || to.Idle <= 0 {
		t.Fatalf("%+v: every timeout must be set", to)
	}
}

// --metrics-addr is checked before anything listens or connects.
func TestCheckListenAddr(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:9104", ":9104", "0.0.0.0:0", "[::1]:9104", "localhost:65535"} {
		if err := checkListenAddr(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{":99999", "9104", "127.0.0.1", "127.0.0.1:-1", "127.0.0.1:http", "[::1:9104"} {
		if err := checkListenAddr(bad); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--metrics-addr") {
			t.Errorf("%q: %v, want a usage error naming --metrics-addr", bad, err)
		}
	}
}
