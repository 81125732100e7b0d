package runner

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probe is what the HTTP endpoints ask of the running migration.
type Probe interface {
	Alive() (bool, string) // stream connected; a liveness probe's failure threshold gives reconnects their grace
	Ready() (bool, string) // backfill done (not stopped) and lag under the threshold
	Pause()
	Resume() string // lifts a pause, starts a stopped backfill again; says which it did
	// SetRate changes the backfill's rows-per-second limit until the process ends (0 = none); says what it did.
	SetRate(rowsPerSecond float64) string
}

// httpTimeouts bound every phase of a request, so idle and slow clients cannot hold connections open.
type httpTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

var defaultHTTPTimeouts = httpTimeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 60 * time.Second}

// checkListenAddr checks --metrics-addr without listening: host:port, the port a number from 0 to 65535.
func checkListenAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = fmt.Errorf("port %q is not a number from 0 to 65535", port)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: --metrics-addr %q: %v: use host:port, e.g. 127.0.0.1:9104 (empty to disable)", ErrUsage, addr, err)
	}
	return nil
}

// listenHTTP opens --metrics-addr before anything connects, so a busy port is reported before the migration
// lock is taken. nil when addr is empty.
func listenHTTP(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --metrics-addr %s: %v (choose a free address, or empty to disable)", ErrUsage, addr, err)
	}
	return ln, nil
}

// serveHTTP serves /metrics, /healthz, /readyz, POST /pause, POST /resume and POST /rate on ln until the returned stop is
// called. The GET endpoints are open to scrapers and probes; the POST ones are guarded by adminGuard.
// A nil ln serves nothing.
func serveHTTP(ctx context.Context, log *slog.Logger, ln net.Listener, token string, t httpTimeouts, reg *prometheus.Registry, p Probe) func() error {
	if ln == nil {
		return func() error { return nil }
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	probe := func(f func() (bool, string)) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			ok, why := f()
			if !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			fmt.Fprintln(w, why)
		}
	}
	mux.Handle("/healthz", probe(p.Alive))
	mux.Handle("/readyz", probe(p.Ready))
	guard := newAdminGuard(log, token, isLoopback(ln.Addr()))
	action := func(f func() string) http.Handler {
		return guard.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			done := f()
			log.Info(done+" by operator", "remote", r.RemoteAddr)
			fmt.Fprintln(w, done)
		}))
	}
	mux.Handle("/pause", action(func() string { p.Pause(); return "backfill paused" }))
	mux.Handle("/resume", action(p.Resume))
	// POST /rate?rows-per-second=N: the copy's speed, changed while the app's latency is watched, without a
	// restart. A bad value changes nothing.
	mux.Handle("/rate", guard.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("rows-per-second")
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || !(n >= 0) || math.IsInf(n, 0) {
			http.Error(w, fmt.Sprintf("rows-per-second %q: give a number of rows per second ≥ 0 (0 = no limit), e.g. POST /rate?rows-per-second=15000", v), http.StatusBadRequest)
			return
		}
		done := p.SetRate(n)
		log.Info(done+" by operator", "remote", r.RemoteAddr)
		fmt.Fprintln(w, done)
	})))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write,
		IdleTimeout: t.Idle, MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	log.Info("serving metrics and probes", "addr", ln.Addr().String(), "admin", guard.describe())
	return func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		return errors.Join(srv.Shutdown(sctx), <-done)
	}
}

// adminGuard decides who may POST /pause, /resume and /rate:
//   - never a browser page of another origin (net/http.CrossOriginProtection: Sec-Fetch-Site, else Origin vs Host);
//   - with a token (--admin-token-file), only requests carrying it as "Authorization: Bearer <token>", from anywhere;
//   - without one, only clients on the loopback of a loopback listener, asking for a loopback Host: a page that
//     rebound its own DNS name to 127.0.0.1 sends that name as Host. On any other listener the endpoints refuse,
//     naming the flag, while the GET endpoints stay open.
type adminGuard struct {
	log      *slog.Logger
	token    [sha256.Size]byte // of the token; compared in constant time
	hasToken bool
	loopback bool // the listener's address is a loopback one
	cop      *http.CrossOriginProtection
}

func newAdminGuard(log *slog.Logger, token string, loopback bool) *adminGuard {
	g := &adminGuard{log: log, hasToken: token != "", loopback: loopback, cop: http.NewCrossOriginProtection()}
	if g.hasToken {
		g.token = sha256.Sum256([]byte(token))
	}
	return g
}

func (g *adminGuard) describe() string {
	switch {
	case g.hasToken:
		return "POST /pause, /resume and /rate with the bearer token of --admin-token-file"
	case g.loopback:
		return "POST /pause, /resume and /rate from this host only"
	}
	return "POST /pause, /resume and /rate off: not a loopback address and no --admin-token-file"
}

func (g *adminGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		if err := g.cop.Check(r); err != nil {
			g.refuse(w, r, http.StatusForbidden, "cross-origin request refused: POST from the command line (curl -X POST), not from a web page")
			return
		}
		if g.hasToken {
			if !g.tokenOK(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="csmh-sync"`)
				g.refuse(w, r, http.StatusUnauthorized, "missing or wrong token: send the content of --admin-token-file as \"Authorization: Bearer <token>\"")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case !g.loopback:
			g.refuse(w, r, http.StatusForbidden, "POST /pause, /resume and /rate need --admin-token-file when --metrics-addr is not a loopback address")
			return
		case !loopbackRemote(r.RemoteAddr):
			g.refuse(w, r, http.StatusForbidden, "POST /pause, /resume and /rate without --admin-token-file answer only this host")
			return
		case !loopbackHost(r.Host):
			g.refuse(w, r, http.StatusForbidden, "Host "+strconv.Quote(r.Host)+" is not a loopback name: use http://127.0.0.1 or http://localhost, or set --admin-token-file")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *adminGuard) tokenOK(r *http.Request) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	return subtle.ConstantTimeCompare(sum[:], g.token[:]) == 1
}

func (g *adminGuard) refuse(w http.ResponseWriter, r *http.Request, code int, why string) {
	g.log.Warn("admin request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "why", why)
	http.Error(w, why, code)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func loopbackRemote(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
