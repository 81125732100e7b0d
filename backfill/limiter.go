package backfill

import (
	"context"
	"sync"
	"time"
)

// limiter is a token bucket over rows, shared by all workers, for --max-rows-per-second. A chunk takes its rows
// after it was read; the bucket may go into debt, and the worker then waits until the debt is repaid, so a
// chunk larger than the bucket still passes and the long-run rate holds. The rate may change while workers
// wait (POST /rate): each waiter's remaining wait is rescaled to the new rate at once.
type limiter struct {
	mu      sync.Mutex
	rate    float64 // rows per second; 0 = unlimited
	burst   float64 // bucket size: one second of rows
	tokens  float64
	last    time.Time
	changed chan struct{} // closed, and replaced, when the rate changes
	now     func() time.Time
	timer   func(time.Duration) (<-chan time.Time, func() bool) // a timer's channel and its Stop
}

func newLimiter(rate float64) *limiter {
	return &limiter{rate: rate, burst: rate, tokens: rate, changed: make(chan struct{}), now: time.Now,
		timer: func(d time.Duration) (<-chan time.Time, func() bool) { t := time.NewTimer(d); return t.C, t.Stop }}
}

// reserve takes n rows from the bucket and returns how long the caller must wait before going on, at the rate
// it also returns, and the channel that closes if that rate changes.
func (l *limiter) reserve(n int64) (time.Duration, float64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rate <= 0 || n <= 0 {
		return 0, l.rate, l.changed
	}
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return 0, l.rate, l.changed
	}
	return rowsWait(-l.tokens, l.rate), l.rate, l.changed
}

// maxRowsWait bounds one wait: a rate so small that the wait would overflow a time.Duration (it would turn
// negative, and the limit would let everything through) waits a day at a time instead.
const maxRowsWait = 24 * time.Hour

// rowsWait is how long rows take at rate rows per second, at most maxRowsWait.
func rowsWait(rows, rate float64) time.Duration {
	if s := rows / rate; s < maxRowsWait.Seconds() {
		return time.Duration(s * float64(time.Second))
	}
	return maxRowsWait
}

// setRate changes the rate (0 = unlimited) and returns the one before. The bucket keeps what it holds up to one
// second of the new rate; a limit set where there was none starts with a full bucket, as at the start.
func (l *limiter) setRate(rate float64) (was float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	was = l.rate
	now := l.now()
	if l.rate > 0 && !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	if l.rate <= 0 {
		l.tokens = rate
	}
	l.last = now
	l.rate, l.burst = rate, rate
	l.tokens = min(l.tokens, l.burst)
	close(l.changed)
	l.changed = make(chan struct{})
	return was
}

// current returns the rate and the channel that closes when it changes.
func (l *limiter) current() (float64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate, l.changed
}

// take reserves n rows and waits as long as the rate requires. It returns the time waited.
func (l *limiter) take(ctx context.Context, n int64) (time.Duration, error) {
	d, rate, changed := l.reserve(n)
	if d <= 0 {
		return 0, nil
	}
	start := l.now()
	end := start.Add(d)
	for {
		c, stop := l.timer(end.Sub(l.now()))
		select {
		case <-ctx.Done():
			stop()
			return l.now().Sub(start), ctx.Err()
		case <-c:
			return l.now().Sub(start), nil
		case <-changed:
			stop()
		}
		// The rows still owed, at the old rate, are repaid at the new one from now; none at no limit.
		now := l.now()
		left := end.Sub(now)
		newRate, ch := l.current()
		if left <= 0 || newRate <= 0 {
			return now.Sub(start), nil
		}
		end = now.Add(rowsWait(left.Seconds()*rate, newRate))
		rate, changed = newRate, ch
	}
}
