package backfill

import (
	"context"
	"sync"
	"time"

	"github.com/csmh-sync/csmh-sync/internal/clock"
)

// limiter is a token bucket over rows, shared by all workers, for --max-rows-per-second. A chunk takes its rows
// after it was read; the bucket may go into debt, and the worker then waits until the debt is repaid, so a
// chunk larger than the bucket still passes and the long-run rate holds.
type limiter struct {
	rate   float64 // rows per second; 0 = unlimited
	burst  float64 // bucket size: one second of rows
	mu     sync.Mutex
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLimiter(rate float64) *limiter {
	return &limiter{rate: rate, burst: rate, tokens: rate, now: time.Now}
}

// reserve takes n rows from the bucket and returns how long the caller must wait before going on.
func (l *limiter) reserve(n int64) time.Duration {
	if l.rate <= 0 || n <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return 0
	}
	return time.Duration(-l.tokens / l.rate * float64(time.Second))
}

// take reserves n rows and waits as long as the rate requires. It returns the time waited.
func (l *limiter) take(ctx context.Context, n int64) (time.Duration, error) {
	d := l.reserve(n)
	if d <= 0 {
		return 0, nil
	}
	start := time.Now()
	err := clock.Sleep(ctx, d)
	return time.Since(start), err
}
