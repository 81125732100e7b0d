package throttle

import (
	"testing"
	"time"
)

// The guard's pause follows the probes: it doubles while the second slowest of the last ten runs more than
// the limit above the lowest probe, holds between half the limit and the limit, halves below, waits a few
// probes after each change, and is bounded.
func TestLatencyGuardPace(t *testing.T) {
	g := &latencyGuard{limit: 5 * time.Millisecond}
	now := time.Unix(0, 0)
	step := func(took time.Duration) time.Duration {
		now = now.Add(probeEvery)
		g.observe(took, now)
		return g.current()
	}
	ms := time.Millisecond
	for range 10 {
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
	// A new base: the server got slower for reasons of its own (more app traffic). After two spans of the
	// copy paced against the old base, the new latency is the base, and the pause goes.
	for range int(2*baseSpan/probeEvery) + 60 {
		p = step(30 * ms)
	}
	if p != 0 {
		t.Fatalf("pause %s two spans after the latency without the copy rose to 30 ms, want none", p)
	}
	// A gap in the probes longer than two spans forgets both: the first probe after it is the base.
	now = now.Add(3 * baseSpan)
	g.observe(50*ms, now)
	if g.cur != 50*ms || g.prev != 0 {
		t.Fatalf("after a gap the spans hold %s and %s, want the new probe alone", g.cur, g.prev)
	}
}
