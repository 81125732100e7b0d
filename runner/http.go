package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
}

// serveHTTP serves /metrics, /healthz, /readyz, POST /pause and POST /resume until ctx ends.
func serveHTTP(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry, p Probe) (func() error, error) {
	if addr == "" {
		return func() error { return nil }, nil
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
	action := func(f func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "use POST", http.StatusMethodNotAllowed)
				return
			}
			done := f()
			log.Info(done+" by operator", "remote", r.RemoteAddr)
			fmt.Fprintln(w, done)
		}
	}
	mux.Handle("/pause", action(func() string { p.Pause(); return "backfill paused" }))
	mux.Handle("/resume", action(p.Resume))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --metrics-addr %s: %v (choose a free address, or empty to disable)", ErrUsage, addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	log.Info("serving metrics and probes", "addr", ln.Addr().String())
	return func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		return errors.Join(srv.Shutdown(sctx), <-done)
	}, nil
}
