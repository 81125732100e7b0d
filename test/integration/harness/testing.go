package harness

import (
	"context"
	"testing"
	"time"
)

// StartT starts a server for a test and stops it in t.Cleanup; on failure the error log's tail is logged.
func StartT(t testing.TB, o Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mariadbd %s error log:\n%s", s.Addr(), s.ErrorLogTail(40))
		}
		if err := s.Stop(); err != nil {
			t.Logf("stop mariadbd: %v", err)
		}
	})
	return s
}

// Eventually polls cond until it returns true or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", within, what, lastErr)
}
