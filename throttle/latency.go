package throttle

import (
	"cmp"
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
	// quietEvery is how often the guard holds every chunk start for quietFor to time the target's commits
	// without the copy (LEDBAT++'s periodic slowdown): the first quietSettle lets the chunks in flight finish,
	// and the second slowest of the probes after it is the base the guard judges against — the same statistic
	// as its judgement, taken without the copy, so a target whose commits are merely uneven is not taken for
	// one the copy slows down. The base is the lower of the last two; the first quiet period begins with the
	// first probe. It costs the copy quietFor in every quietEvery (2.5 %).
	quietEvery  = time.Minute
	quietFor    = 1500 * time.Millisecond
	quietSettle = 300 * time.Millisecond
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
	Rise  time.Duration // the second slowest of the last probes, above the same of the probes without the copy
	Pause time.Duration // what a chunk start now waits (to the end of a quiet period, within one)
	Quiet bool          // the guard is holding the copy to time the target's commits without it
	Err   error
}

// latencyGuard paces the copy by the target's commit latency, the way LEDBAT paces a bulk transfer by the
// queueing delay it adds: it times a small commit (probe) every probeEvery, and while the second slowest of the
// last ten probes lies more than limit above the same statistic of probes taken while the copy was held
// (quietEvery), it doubles the pause every chunk start waits; below half the limit it halves it. The copy thus
// takes what the target can give without the app's commits, which wait in the same queues (redo, binlog, group
// commit, CPU), getting slower.
type latencyGuard struct {
	probe  func(context.Context) error
	limit  time.Duration
	onRead func(Latency)
	every  time.Duration // quietEvery; tests lengthen it

	mu       sync.Mutex
	pause    time.Duration
	quietEnd time.Time // chunk starts wait until then; zero or past: no quiet period

	// Owned by run's goroutine.
	last      []time.Duration // the probes since the last change of phase, at most probeWindow
	quiet     []time.Duration // the probes of the current quiet period, after its settling
	bases     [2]time.Duration
	nextQuiet time.Time // when the next quiet period begins; zero: at the next probe
	lastAt    time.Time // the last probe's time
	rise      time.Duration
	hold      int // probes to wait before the next change of the pause
}

// current is the pause a chunk start waits now.
func (g *latencyGuard) current() time.Duration { return g.pauseAt(time.Now()) }

// pauseAt is the pause a chunk start waits at now: the pause, or the rest of a quiet period.
func (g *latencyGuard) pauseAt(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.pause, g.quietEnd.Sub(now))
}

func (g *latencyGuard) setPause(p time.Duration) {
	g.mu.Lock()
	g.pause = p
	g.mu.Unlock()
}

func (g *latencyGuard) setQuietEnd(t time.Time) {
	g.mu.Lock()
	g.quietEnd = t
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
			g.failed()
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

// failed forgets the pace and any quiet period under way after a probe failed: the copy goes unpaced. The
// bases stay, and the next quiet period keeps its time.
func (g *latencyGuard) failed() {
	g.setPause(0)
	g.setQuietEnd(time.Time{})
	g.last, g.quiet, g.hold = g.last[:0], g.quiet[:0], 0
}

// secondSlowest is the window statistic: the second slowest of the last probeWindow of d (the slowest of one).
func secondSlowest(d []time.Duration) time.Duration {
	sorted := slices.Sorted(slices.Values(d[max(len(d)-probeWindow, 0):]))
	return sorted[max(len(sorted)-2, 0)]
}

// observe learns from one probe that took took, at now.
func (g *latencyGuard) observe(took time.Duration, now time.Time) {
	every := cmp.Or(g.every, quietEvery)
	if !g.lastAt.IsZero() && now.Sub(g.lastAt) >= 2*every {
		g.bases, g.nextQuiet = [2]time.Duration{}, time.Time{} // a gap in the probes: the bases are stale
	}
	g.lastAt = now
	g.mu.Lock()
	quietEnd := g.quietEnd
	g.mu.Unlock()
	switch {
	case now.Before(quietEnd): // within a quiet period: after its settling, a probe of the target without the copy
		if now.Sub(quietEnd.Add(-quietFor)) >= quietSettle {
			g.quiet = append(g.quiet, took)
		}
		g.report(now)
		return
	case !quietEnd.IsZero(): // a quiet period is over: its probes give a base; the window starts again
		if len(g.quiet) > 0 {
			g.bases[0], g.bases[1] = g.bases[1], secondSlowest(g.quiet)
		}
		// The pace holds until the window is full again: its first probes, taken as the copy starts again after
		// the quiet, would read as room to spare.
		g.quiet, g.last, g.hold = g.quiet[:0], g.last[:0], probeWindow
		g.setQuietEnd(time.Time{})
	}
	if !now.Before(g.nextQuiet) {
		g.nextQuiet = now.Add(every)
		g.quiet = g.quiet[:0]
		g.setQuietEnd(now.Add(quietFor))
		g.report(now)
		return
	}
	base := min(g.bases[0], g.bases[1]) // the lower of the last two, or the one there is
	if base == 0 {
		base = max(g.bases[0], g.bases[1])
	}
	if base == 0 { // no quiet period has measured the target yet (its probes failed): nothing to judge by
		g.report(now)
		return
	}
	g.last = append(g.last, took)
	if len(g.last) > probeWindow {
		g.last = g.last[1:]
	}
	g.rise = secondSlowest(g.last) - base
	g.mu.Lock()
	pause := g.pause
	g.mu.Unlock()
	if g.hold > 0 {
		g.hold--
	} else {
		was := pause
		switch {
		case g.rise > g.limit:
			pause = min(max(2*pause, minPause), maxPause)
		case g.rise < g.limit/2:
			if pause /= 2; pause < minPause {
				pause = 0
			}
		}
		if pause != was {
			g.hold = holdProbes
			g.setPause(pause)
		}
	}
	g.report(now)
}

// report hands the guard's state at now to onRead.
func (g *latencyGuard) report(now time.Time) {
	if g.onRead == nil {
		return
	}
	g.mu.Lock()
	l := Latency{Rise: g.rise, Pause: max(g.pause, g.quietEnd.Sub(now)), Quiet: now.Before(g.quietEnd)}
	g.mu.Unlock()
	g.onRead(l)
}
