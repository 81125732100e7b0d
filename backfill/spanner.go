package backfill

import (
	"sync"
	"time"
)

// spanner sizes a worker's chunks by id span. Ids are not rows: deleted history leaves sparse ranges, and a few
// rows carry megabytes of state. After each chunk the span is set so the next chunk takes about the target time
// and carries at most the byte budget, judged by the last chunk's duration, rows per id and bytes per id.
// Growth is limited per chunk because a span learnt over a sparse range may reach dense rows again; the row
// cap bounds such a chunk until the span has shrunk.
type spanner struct {
	mu       sync.Mutex
	span     uint64
	target   time.Duration
	budget   int64
	rowBytes float64 // moving average of bytes per row
}

const (
	initialSpan = 1000
	maxSpan     = 1 << 26
	maxGrowth   = 2.0  // a span at most doubles from one chunk to the next
	maxShrink   = 16.0 // and shrinks at most sixteenfold
	minRowCap   = 16
	maxRowCap   = maxWarnings // every duplicate-key warning of a chunk can be listed
	rowBytesEMA = 0.3         // weight of the newest chunk in the bytes-per-row average
)

func newSpanner(target time.Duration, budget int64, rowBytes float64) *spanner {
	return &spanner{span: initialSpan, target: target, budget: budget, rowBytes: max(rowBytes, 1)}
}

// next returns the span of the next chunk and the most rows it may hold.
func (s *spanner) next() (span uint64, rowCap int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.span, rowCapFor(s.budget, s.rowBytes)
}

// observe learns from a committed chunk.
func (s *spanner) observe(c chunkStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.read > 0 && c.bytes > 0 {
		s.rowBytes += rowBytesEMA * (float64(c.bytes)/float64(c.read) - s.rowBytes)
	}
	s.span = nextSpan(c.hi-c.lo+1, c.read, c.bytes, c.took, s.target, s.budget)
}

// shrink cuts the span after a lock-wait timeout or deadlock: fewer rows locked, fewer collisions.
func (s *spanner) shrink() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.span = max(s.span/4, 1)
}

// nextSpan is the span that would have made a chunk of ids ids, rows rows, bytes bytes and duration took hit the
// target time and stay within the byte budget, limited to [ids/maxShrink, ids·maxGrowth] and [1, maxSpan].
//
// Part of a chunk's time is fixed whatever its size: the round trips of two transactions and two commits. On a
// slow link or a loaded server that part alone can exceed the target, and a span cut to fit the target would
// shrink chunk after chunk to a row or two each, which hold their locks for the same fixed time while the copy
// crawls. So the time alone never shrinks a chunk below minTimedRows rows, nor an empty one at all (an empty
// range costs one index lookup, whatever its span). Lock waits and deadlines still shrink it further
// (spanner.shrink), and the byte budget always applies.
func nextSpan(ids uint64, rows, bytes int64, took, target time.Duration, budget int64) uint64 {
	n := float64(max(ids, 1))
	want := n * maxGrowth // an empty or instant chunk only teaches that more fits
	if took > 0 && rows > 0 {
		want = min(want, n*float64(target)/float64(took))
		want = max(want, min(n*minTimedRows/float64(rows), n*maxGrowth))
	}
	if bytes > 0 {
		want = min(want, float64(budget)/(float64(bytes)/n))
	}
	want = max(want, n/maxShrink)
	return uint64(min(max(want, 1), maxSpan))
}

// minTimedRows is the fewest rows a chunk's duration alone shrinks it to (nextSpan).
const minTimedRows = 100

// rowCapFor is the most rows one chunk may read: twice what the byte budget holds at the average row size.
func rowCapFor(budget int64, rowBytes float64) int64 {
	c := 2 * float64(budget) / max(rowBytes, 1)
	return int64(min(max(c, minRowCap), maxRowCap))
}
