package throttle

import "time"

// SetQuietEvery spaces the latency guard's quiet periods after the first (at its first probe) by d.
func SetQuietEvery(t *Throttler, d time.Duration) { t.latency.every = d }

// RedoTrickle is the spacing of chunk starts above the redo limit.
const RedoTrickle = redoTrickle
