package throttle

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// DefaultMaxLatencyRise is the default --max-latency-rise: how far the copy may raise the target's commit
// latency above what it is without the copy before each chunk start waits longer. The app-impact budget is
// +10 ms on the app's p99 (docs/benchmarks.md); the guard acts on the median of its last probes, so it aims
// below that.
const DefaultMaxLatencyRise = 5 * time.Millisecond

const (
	// probeEvery is how often the guard times a commit on the target, for all the workers together.
	probeEvery = 100 * time.Millisecond
	// probeTimeout bounds one probe; a probe that takes that long counts as that long.
	probeTimeout = 2 * time.Second
	// probeWindow is how many probes the guard judges by: their median, so one slow commit of the app's own
	// does not slow the copy, and a rise that lasts two probes does.
	probeWindow = 3
	// baseSpan is how long the lowest probe serves as the commit latency without the copy: the lowest of the
	// current and the previous span, so a server whose latency without the copy rises (more app traffic) is
	// measured anew within two spans, and the copy's own pauses leave room for probes that show it.
	baseSpan = time.Minute
	// minPause, maxPause bound the pause before each chunk start; it doubles while the latency is above the
	// limit and halves while it is below half the limit.
	minPause = 5 * time.Millisecond
	maxPause = 2 * time.Second
)

// Latency is one judgement of the latency guard.
type Latency struct {
	Base  time.Duration // the lowest recent probe: the commit latency without the copy
	Rise  time.Duration // the median of the last probes, above Base
	Pause time.Duration // what each chunk start now waits
}

// latencyGuard paces the copy by the target's commit latency, the way LEDBAT paces a bulk transfer by the
// queueing delay it adds: it times a small commit (probe) every probeEvery, and while the median of the last
// probes lies more than limit above the lowest probe of the last minute or two, it doubles the pause every
// chunk start waits; below half the limit it halves it. The copy thus takes what the target can give
// without the app's commits, which wait in the same queues (redo, binlog, group commit, CPU), getting slower.
type latencyGuard struct {
	probe  func(context.Context) error
	limit  time.Duration
	onRead func(Latency)

	mu        sync.Mutex
	at        time.Time       // when the last probe ran
	last      []time.Duration // the last probeWindow probes
	cur, prev time.Duration   // the lowest probe of the current and previous baseSpan; 0 = none yet
	spanAt    time.Time       // when the current span began
	pause     time.Duration
	off       bool
}

// wait returns the pause the next chunk start must wait, probing first when the last probe is older than
// probeEvery. A probe that fails for good (the probe table missing, a grant taken away) turns the guard off:
// it then stands aside rather than stop the copy; the start logged why.
func (g *latencyGuard) wait(ctx context.Context) (time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.off || time.Since(g.at) < probeEvery {
		return g.pause, nil
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	start := time.Now()
	err := g.probe(pctx)
	took := time.Since(start)
	cancel()
	g.at = time.Now()
	switch {
	case err != nil && ctx.Err() != nil:
		return 0, ctx.Err()
	case err != nil && pctx.Err() != nil:
		took = probeTimeout // the target did not commit within the timeout: as slow as that, at least
	case err != nil && dbconn.IsTransient(err):
		return g.pause, nil // a lost connection says nothing of the latency; the next probe will
	case err != nil:
		g.off, g.pause = true, 0
		return 0, nil
	}
	g.observe(took, g.at)
	return g.pause, nil
}

// observe learns from one probe that took took, at now.
func (g *latencyGuard) observe(took time.Duration, now time.Time) {
	if now.Sub(g.spanAt) >= baseSpan {
		g.prev, g.cur, g.spanAt = g.cur, 0, now
	}
	if g.cur == 0 || took < g.cur {
		g.cur = took
	}
	base := g.cur
	if g.prev > 0 {
		base = min(base, g.prev)
	}
	g.last = append(g.last, took)
	if len(g.last) > probeWindow {
		g.last = g.last[1:]
	}
	sorted := slices.Sorted(slices.Values(g.last))
	rise := sorted[len(sorted)/2] - base
	switch {
	case rise > g.limit:
		g.pause = min(max(2*g.pause, minPause), maxPause)
	case rise < g.limit/2:
		if g.pause /= 2; g.pause < minPause {
			g.pause = 0
		}
	}
	if g.onRead != nil {
		g.onRead(Latency{Base: base, Rise: rise, Pause: g.pause})
	}
}
