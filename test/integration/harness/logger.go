package harness

import (
	"bytes"
	"log/slog"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
)

// logTail is how many of the last log lines a failed test prints.
const logTail = 200

// Logger is a logger for the code under test: it keeps the last 200 lines in memory and prints them when the
// test fails, so a failure in CI shows what the code said before it (retries, splits, deadlines) without a
// passing test's noise. Lines logged after the test ends are dropped.
func Logger(t testing.TB) *slog.Logger {
	r := &ring{}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.closed = true
		if t.Failed() && len(r.lines) > 0 {
			t.Logf("the last %d log lines of the code under test:\n%s", len(r.lines), strings.Join(r.ordered(), ""))
		}
	})
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ring keeps the last logTail lines written to it.
type ring struct {
	mu     sync.Mutex
	lines  []string
	next   int
	closed bool
}

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return len(p), nil
	}
	for _, l := range bytes.SplitAfter(p, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if len(r.lines) < logTail {
			r.lines = append(r.lines, string(l))
			continue
		}
		r.lines[r.next] = string(l)
		r.next = (r.next + 1) % logTail
	}
	return len(p), nil
}

// ordered is the kept lines, oldest first.
func (r *ring) ordered() []string {
	return append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}

// Goroutines is a dump of every goroutine's stack, for a test that failed by waiting too long: it shows what
// the code under test was blocked on.
func Goroutines() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}
