package throttle

import (
	"testing"
	"time"
)

// The guard's pace follows the probes: each quiet period measures the target's commits without the copy (the
// base); between them the pause doubles while the second slowest of the last ten runs more than the limit above
// the base, holds between half the limit and the limit, halves below, waits a few probes after each change, and
// is bounded.
func TestLatencyGuardPace(t *testing.T) {
	g := &latencyGuard{limit: 5 * time.Millisecond}
	now := time.Unix(0, 0)
	ms := time.Millisecond
	step := func(took time.Duration) time.Duration {
		now = now.Add(probeEvery)
		g.observe(took, now)
		return g.pause
	}
	inQuiet := func() bool { return g.quietEnd.After(now) }
	quietPeriod := func(took time.Duration) { // steps until a quiet period begins, and through it
		for !inQuiet() {
			step(took)
		}
		for inQuiet() {
			step(took)
		}
	}
	// A target whose commits are uneven by themselves: 2 ms, and 9 ms one time in five.
	k := 0
	uneven := func() time.Duration {
		if k++; k%5 == 0 {
			return 9 * ms
		}
		return 2 * ms
	}

	// The first probe begins a quiet period: every chunk start waits to its end.
	step(uneven())
	if w := g.pauseAt(now); w != quietFor {
		t.Fatalf("a chunk start at the first probe waits %s, want the quiet period's %s", w, quietFor)
	}
	for inQuiet() {
		step(uneven())
	}
	if g.bases[1] != 9*ms {
		t.Fatalf("base %s after the first quiet period, want 9 ms: the second slowest of its probes", g.bases[1])
	}
	if w := g.pauseAt(now); w != 0 {
		t.Fatalf("a chunk start after the quiet period waits %s, want none", w)
	}
	// The copy leaves the commits as uneven as they were: no pause, for minutes. (Judged against the fastest
	// probe, 2 ms, the 9 ms ones would pace the copy for ever.)
	for range int(3 * quietEvery / probeEvery) {
		if p := step(uneven()); p != 0 {
			t.Fatalf("pause %s while the copy leaves the commits as they were without it, want none", p)
		}
	}

	quietPeriod(2 * ms) // the base is now the lower of 9 and 2 ms
	// The pace holds until the window is full again after a quiet period.
	g.pause = 4 * minPause
	for range probeWindow - 1 { // the probe that ended the quiet period was the first of the window
		if p := step(2 * ms); p != 4*minPause {
			t.Fatalf("pause %s within a window of the end of a quiet period, want it held at %s", p, 4*minPause)
		}
	}
	for range 3 * probeWindow {
		step(2 * ms)
	}
	for range probeWindow {
		if p := step(2 * ms); p != 0 {
			t.Fatalf("pause %s at the base latency, want none", p)
		}
	}
	if p := step(40 * ms); p != 0 {
		t.Fatalf("pause %s after one slow probe: one slow commit of the app's own must not slow the copy", p)
	}
	if p := step(40 * ms); p != minPause {
		t.Fatalf("pause %s after two slow probes of ten, want %s", p, minPause)
	}
	for range holdProbes {
		if p := step(40 * ms); p != minPause {
			t.Fatalf("pause %s within the window after a change, want it held at %s", p, minPause)
		}
	}
	if p := step(40 * ms); p != 2*minPause {
		t.Fatalf("pause %s once the window after a change is over, still slow, want %s", p, 2*minPause)
	}
	var p time.Duration
	for range 60 {
		p = step(40 * ms)
	}
	if p != maxPause {
		t.Fatalf("pause %s after a long rise, want the bound %s", p, maxPause)
	}
	for range 2 * probeWindow { // a rise of 3 ms: between half the limit and the limit
		p = step(5 * ms)
	}
	if p != maxPause {
		t.Fatalf("pause %s within the limit but above half of it, want it held at %s", p, maxPause)
	}
	for range 60 {
		p = step(2 * ms)
	}
	if p != 0 {
		t.Fatalf("pause %s after the latency came back, want none", p)
	}

	// The server gets slower for reasons of its own (more app traffic): once two quiet periods have measured
	// it, the new latency is the base, and the pause goes.
	for range 60 {
		step(30 * ms)
	}
	if g.pause == 0 {
		t.Fatal("no pause while the commits run 28 ms above the base")
	}
	quietPeriod(30 * ms)
	quietPeriod(30 * ms)
	for range 60 {
		p = step(30 * ms)
	}
	if p != 0 {
		t.Fatalf("pause %s two quiet periods after the latency without the copy rose to 30 ms, want none", p)
	}

	// A gap in the probes longer than two quiet periods forgets the bases: the next probe begins a quiet period.
	now = now.Add(3 * quietEvery)
	step(50 * ms)
	if !inQuiet() || g.bases != [2]time.Duration{} {
		t.Fatalf("after a gap: quiet %v, bases %v; want a quiet period and no bases", inQuiet(), g.bases)
	}
	// A probe that fails ends the quiet period: the copy goes unpaced.
	g.failed()
	if w := g.pauseAt(now); w != 0 {
		t.Fatalf("a chunk start after a failed probe waits %s, want none", w)
	}
	// Without a base (that quiet period measured nothing), the guard does not pace the copy until the next one.
	for range 30 {
		if p := step(40 * ms); p != 0 {
			t.Fatalf("pause %s without a measurement of the target without the copy, want none", p)
		}
	}
	quietPeriod(2 * ms)
	for range 2 * probeWindow {
		p = step(40 * ms)
	}
	if p == 0 {
		t.Fatal("no pause after a quiet period measured 2 ms and the commits run at 40 ms")
	}
}
