package throttle

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/clock"
)

// DefaultMaxLatencyRise is the default --max-latency-rise: how far the copy may raise the target's commit
// latency above what it is without the copy before chunk starts wait. The app-impact budget is +10 ms on the
// app's p99 (docs/benchmarks.md); the guard acts on the 90th percentile of its last probes, so it aims below that.
const DefaultMaxLatencyRise = 5 * time.Millisecond

const (
	// probeEvery is how often the guard times a commit on the target.
	probeEvery = 100 * time.Millisecond
	// probeTimeout bounds one probe; a probe that takes that long counts as that long.
	probeTimeout = 2 * time.Second
	// probeWindow is how many probes the guard judges by (a second of them), and by their second slowest (their
	// 90th percentile): the app's budget is on its slow statements, its p99, which a median does not see move
	// (a copy that doubles the app's p99 raises the median commit by a millisecond or two), while one slow
	// commit of the app's own does not count. After each change of the pause the guard waits holdProbes.
	probeWindow = 10
	holdProbes  = 3
	// baseSpan is how long the lowest probe serves as the commit latency without the copy: the lowest of the
	// current and the previous span, so a server whose latency without the copy rises (more app traffic) is
	// measured anew within two spans.
	baseSpan = time.Minute
	// minPause, maxPause bound the pause before each chunk start; it doubles while the latency is above the
	// limit and halves while it is below half the limit.
	minPause = 5 * time.Millisecond
	maxPause = 2 * time.Second
	// probeRetry is how long a probe that failed for a reason of its own (no grant, a read-only server) waits
	// before the next try; the copy is not paced meanwhile.
	probeRetry = time.Minute
)

// Latency is one judgement of the latency guard. Err is set, and the rest zero, when the probe failed: the copy
// is not paced until a probe succeeds again.
type Latency struct {
	Rise  time.Duration // the second slowest of the last probes, above the lowest recent one (the latency without the copy)
	Pause time.Duration // what each chunk start now waits
	Err   error
}

// latencyGuard paces the copy by the target's commit latency, the way LEDBAT paces a bulk transfer by the
// queueing delay it adds: it times a small commit (probe) every probeEvery, and while the second slowest of the
// last ten probes lies more than limit above the lowest probe of the last minute or two, it doubles the pause every
// chunk start waits; below half the limit it halves it. The copy thus takes what the target can give without
// the app's commits, which wait in the same queues (redo, binlog, group commit, CPU), getting slower.
type latencyGuard struct {
	probe  func(context.Context) error
	limit  time.Duration
	onRead func(Latency)

	mu    sync.Mutex
	pause time.Duration

	// Owned by run's goroutine.
	last      []time.Duration // the last probeWindow probes
	cur, prev time.Duration   // the lowest probe of the current and previous baseSpan; 0 = none yet
	spanAt    time.Time       // when the current span began
	hold      int             // probes to wait before the next change of the pause
}

// current is the pause a chunk start waits now.
func (g *latencyGuard) current() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pause
}

func (g *latencyGuard) setPause(p time.Duration) {
	g.mu.Lock()
	g.pause = p
	g.mu.Unlock()
}

// run probes every probeEvery until ctx ends. A probe that fails says nothing of the latency: the copy goes
// unpaced until one succeeds, at the next tick after a lost connection, after probeRetry otherwise (onRead
// carries the error, for the log).
func (g *latencyGuard) run(ctx context.Context) {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		start := time.Now()
		err := g.probe(pctx)
		took := time.Since(start)
		timedOut := pctx.Err() != nil
		cancel()
		wait := time.Duration(0)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			g.observe(took, time.Now())
		case timedOut || isStatementTimeout(err):
			g.observe(probeTimeout, time.Now()) // not committed within the timeout: as slow as that, at least
		default:
			g.setPause(0)
			g.last, g.hold = g.last[:0], 0
			if g.onRead != nil {
				g.onRead(Latency{Err: err})
			}
			if !dbconn.IsTransient(err) {
				wait = probeRetry
			}
		}
		if wait > 0 {
			if clock.Sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// isStatementTimeout is MariaDB's max_statement_time (1969) or MySQL's max_execution_time (3024) cutting the
// probe short: the server's own timeout, a slow commit like any other.
func isStatementTimeout(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1969 || me.Number == 3024)
}

// observe learns from one probe that took took, at now.
func (g *latencyGuard) observe(took time.Duration, now time.Time) {
	if since := now.Sub(g.spanAt); since >= 2*baseSpan {
		g.prev, g.cur, g.spanAt = 0, 0, now // a gap in the probes: both spans are stale
	} else if since >= baseSpan {
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
	rise := sorted[max(len(sorted)-2, 0)] - base
	pause := g.current()
	if g.hold > 0 {
		g.hold--
	} else {
		was := pause
		switch {
		case rise > g.limit:
			pause = min(max(2*pause, minPause), maxPause)
		case rise < g.limit/2:
			if pause /= 2; pause < minPause {
				pause = 0
			}
		}
		if pause != was {
			g.hold = holdProbes
			g.setPause(pause)
		}
	}
	if g.onRead != nil {
		g.onRead(Latency{Rise: rise, Pause: pause})
	}
}
