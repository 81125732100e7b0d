package throttle

import "time"

// SetQuietEvery spaces the latency guard's quiet periods after the first (at its first probe) by d.
func SetQuietEvery(t *Throttler, d time.Duration) { t.latency.every = d }

// RedoTrickled is the number of chunk starts let through while the redo log was above the limit.
func RedoTrickled(t *Throttler) int {
	t.redo.mu.Lock()
	defer t.redo.mu.Unlock()
	return t.redo.trickled
}
