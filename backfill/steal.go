package backfill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/clock"
	"github.com/csmh-sync/csmh-sync/table"
)

// Work is divided by rows, not by ids. The first start cuts the id range into --workers segments of equal id
// span (cheap, and right for dense ids), but ids are not rows: one outlier id far above the rest puts nearly
// every row in the first segment. So a worker whose segment is done does not stop: it takes a segment nobody
// copies yet, else it splits the segment with the most rows left at its row median (estimated from the
// primary key with EXPLAIN, without reading rows) and copies the upper half. Every worker stays busy until
// too few rows are left to share, on any id layout, and a split is a checkpoint write like any other: a
// restart continues every segment, the split ones included (docs/design.md, "Dividing the work").

// minSplitRows is the fewest rows (estimated) a segment must have left, beyond what its worker has in
// flight, for an idle worker to take half of them: below it the split costs more than it saves.
const minSplitRows = 10_000

// estimateRefresh is how often the rows left in each segment are estimated again for progress and ETA.
const estimateRefresh = 15 * time.Second

// segEstimate is the estimated rows of a segment from its next id to its end, and the segment's rows copied
// when it was taken: rows copied since then are subtracted.
type segEstimate struct {
	left   int64
	rowsAt uint64
}

// work is one worker: it copies segments until none is left to copy or worth splitting.
func (b *Backfill) work(ctx context.Context) error {
	budget := b.cfg.ChunkBytes
	if b.sameServer.Load() {
		// Server-side chunks never pass through this process: the byte budget guards no memory here, only the
		// size of one transaction. --chunk-time still bounds how long a chunk's rows stay locked.
		budget = max(budget, sameServerChunkBytes)
	}
	sp := newSpanner(b.cfg.ChunkTime, budget, b.rowBytesEst) // the worker's learnt span carries over to its next segment
	for {
		seg, ok, err := b.claim(ctx, sp)
		if err != nil || !ok {
			return err
		}
		err = b.runSegment(ctx, seg, sp)
		b.mu.Lock()
		delete(b.active, seg.ID)
		b.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// claim returns the next segment for an idle worker: the lowest one not done that no worker copies, else the
// upper half of the busiest one; ok is false when nothing is left worth taking. A split meets the transient
// failures a chunk does (lock waits, lost connections, a fence after the migration lock was taken again) and
// is retried like one, after reading the segments again: a split whose commit was acknowledged as failed may
// have committed, and its new segment must not be left to nobody.
func (b *Backfill) claim(ctx context.Context, sp *spanner) (checkpoint.Segment, bool, error) {
	b.stealMu.Lock() // one claim at a time: two idle workers never split the same segment
	defer b.stealMu.Unlock()
	moved, failures, delay := 0, 0, retryBackoff
	for {
		if s, ok := b.unclaimed(); ok {
			return s, true, nil
		}
		s, ok, err := b.split(ctx, sp)
		if errors.Is(err, checkpoint.ErrSegmentMoved) {
			if moved++; moved < 3 { // the busy worker may commit past the chosen split point first: choose again
				continue
			}
			ok, err = false, nil
		}
		if err == nil && ok {
			return s, true, nil
		}
		if err == nil {
			// Nothing is left worth taking, as far as memory knows. The checkpoint has the last word: a split
			// whose commit was reported failed may have committed, and its segment is nobody's yet.
			if err = b.syncSegments(ctx); err == nil {
				s, ok := b.unclaimed()
				return s, ok, nil
			}
		}
		switch {
		case ctx.Err() != nil:
			return checkpoint.Segment{}, false, ctx.Err()
		case !dbconn.IsTransient(err) && !errors.Is(err, checkpoint.ErrFenced) && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, errSplitUnresolved):
			return checkpoint.Segment{}, false, err
		}
		if failures++; b.cfg.MaxAttempts >= 0 && failures > cmp.Or(b.cfg.MaxAttempts, defaultMaxAttempts) {
			return checkpoint.Segment{}, false, fmt.Errorf("%w (%d attempts failed)", err, failures)
		}
		b.log.Warn("backfill: taking over rows of a busy segment failed, retrying", "attempt", failures, "err", err)
		if err := clock.Sleep(ctx, delay/2+time.Duration(rand.Int64N(int64(delay)))); err != nil {
			return checkpoint.Segment{}, false, err
		}
		delay = min(delay*2, maxBackoff)
		if err := b.syncSegments(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("backfill: segments not read again after a failed split", "err", err)
		}
	}
}

// unclaimed claims the lowest segment not done that no worker copies.
func (b *Backfill) unclaimed() (checkpoint.Segment, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]int, 0, len(b.segs))
	for id := range b.segs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := b.segs[id]
		if _, busy := b.active[id]; !busy && !s.Done && s.Next <= s.End {
			b.active[id] = nil
			return s, true
		}
	}
	return checkpoint.Segment{}, false
}

// split cuts the busy segment with the most rows left at its row median and returns the new upper segment,
// claimed by the caller. The caller's spanner starts from the busy worker's span: its own may have been learnt
// over an empty id span, the busy one's over the rows the caller takes next.
func (b *Backfill) split(ctx context.Context, sp *spanner) (checkpoint.Segment, bool, error) {
	type candidate struct {
		seg    checkpoint.Segment
		lo     uint64 // the segment's next id
		w      *worker
		est    int64
		fromID int
	}
	b.mu.Lock()
	var cands []candidate
	maxID := 0
	epoch := b.segsEpoch // the epoch segs (and maxID) were read in: the split is fenced if the lock was taken since
	for id, s := range b.segs {
		maxID = max(maxID, id)
		w, busy := b.active[id]
		if !busy || s.Done || s.Next > s.End {
			continue
		}
		// The split point is half the rows left away, and above every chunk the busy worker has planned (below).
		cands = append(cands, candidate{seg: s, lo: s.Next, w: w})
	}
	b.mu.Unlock()
	var best *candidate
	for i := range cands {
		c := &cands[i]
		n, err := b.rowsIn(ctx, c.lo, c.seg.End)
		if err != nil {
			return checkpoint.Segment{}, false, err
		}
		c.est = n
		b.setEstimate(c.seg.ID, n, c.seg.Rows)
		if best == nil || c.est > best.est {
			best = c
		}
	}
	if best == nil || best.est < minSplitRows {
		return checkpoint.Segment{}, false, nil
	}
	at, err := b.median(ctx, best.lo, best.seg.End)
	if err != nil {
		return checkpoint.Segment{}, false, err
	}
	if at <= best.lo || at > best.seg.End {
		return checkpoint.Segment{}, false, nil
	}
	// Never inside a chunk in flight: the new segment's first statement would wait for that chunk's rows, and
	// below lock mode 2 it would wait holding CSMHE's AUTO-INC lock, with every app insert queued behind it,
	// and the turn for such statements (oneBulk) that the busy chunk needs for its next one: a cycle InnoDB
	// cannot see. So the split lands above the busy worker's reach, and until it is committed (or has failed)
	// the worker plans no chunk past the split point (planChunk).
	b.mu.Lock()
	if b.splitting != nil {
		// An earlier split's outcome is still unknown (the checkpoint could not be read after it failed): the
		// busy worker may be waiting for it. The retry reads the checkpoint first, which resolves it.
		b.mu.Unlock()
		return checkpoint.Segment{}, false, errSplitUnresolved
	}
	if w := b.active[best.seg.ID]; w != nil {
		at = max(at, w.reach+1)
	}
	if at > b.segs[best.seg.ID].End {
		b.mu.Unlock()
		return checkpoint.Segment{}, false, nil // the chunks in flight hold every row left
	}
	pending := &pendingSplit{seg: best.seg.ID, at: at, done: make(chan struct{})}
	b.splitting = pending
	b.mu.Unlock()
	unsure := false
	defer func() {
		if !unsure {
			b.mu.Lock()
			b.endSplit(pending)
			b.mu.Unlock()
		}
	}()
	to, err := b.store.SplitSegment(ctx, epoch, best.seg, at, maxID+1)
	if errors.Is(err, checkpoint.ErrSegmentMoved) {
		if rerr := b.syncSegments(ctx); rerr != nil {
			return checkpoint.Segment{}, false, rerr
		}
		return checkpoint.Segment{}, false, err
	}
	if err != nil {
		// The split may have committed though its acknowledgement was lost: until the checkpoint says, the busy
		// worker keeps planning below the split point (syncSegments, here or in claim's retry, ends the wait).
		unsure = b.syncSegments(ctx) != nil
		return checkpoint.Segment{}, false, fmt.Errorf("backfill: %w", err)
	}
	b.mu.Lock()
	v := b.segs[best.seg.ID]
	v.End = min(v.End, at-1)
	b.segs[best.seg.ID] = v
	b.segs[to.ID] = to
	b.active[to.ID] = nil
	b.mu.Unlock()
	if best.w != nil {
		span, _ := best.w.sp.next()
		sp.mu.Lock()
		sp.span = span
		sp.mu.Unlock()
	}
	b.refreshEstimates(ctx)
	b.log.Info("backfill segment split: an idle worker takes the upper half of the rows left", "segment", best.seg.ID,
		"new_segment", to.ID, "at_id", at, "end_id", to.End, "rows_left_estimate", best.est)
	b.m.SegmentSplits.Inc()
	return to, true, nil
}

// median is the first id of the upper half of the rows in [lo, hi]. The range is cut into pieces whose
// estimates are under InnoDB's cap (pieces); the piece where the running sum of their rows passes half is
// bisected with the estimates of its own sub-ranges, which stay under the cap. About 31 EXPLAINs for a 2^31-id
// piece besides the pieces' own; none reads the rows.
func (b *Backfill) median(ctx context.Context, lo, hi uint64) (uint64, error) {
	ps, err := b.pieces(ctx, lo, hi)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range ps {
		total += p.rows
	}
	need := (total + 1) / 2
	for _, p := range ps {
		if p.rows < need {
			need -= p.rows
			continue
		}
		a, z := p.lo, p.hi
		for a < z {
			m := a + (z-a)/2
			n, err := b.estimate(ctx, p.lo, m)
			if err != nil {
				return 0, err
			}
			if n >= need {
				z = m
			} else {
				a = m + 1
			}
		}
		return a + 1, nil
	}
	return hi + 1, nil
}

// piece is an id range and its estimated rows, under InnoDB's cap.
type piece struct {
	lo, hi uint64
	rows   int64
}

// rowsIn is the estimated number of rows with lo ≤ id ≤ hi: the sum of its pieces.
func (b *Backfill) rowsIn(ctx context.Context, lo, hi uint64) (int64, error) {
	ps, err := b.pieces(ctx, lo, hi)
	var n int64
	for _, p := range ps {
		n += p.rows
	}
	return n, err
}

// pieces cuts [lo, hi] into ranges whose row estimates are under InnoDB's cap. InnoDB caps a range's estimate
// at half the table's rows (btr_estimate_n_rows_in_range), so a range holding more reads as half the table:
// such a range is cut in two, recursively. A range at the cap holds a large share of the table, so only a
// few are at the cap on each level: the pieces number a few per halving of the id span.
func (b *Backfill) pieces(ctx context.Context, lo, hi uint64) ([]piece, error) {
	capped, err := b.estimate(ctx, 0, 1<<63-1) // the whole table: always at the cap, unless exact
	if err != nil {
		return nil, err
	}
	var out []piece
	var cut func(lo, hi uint64, depth int) error
	cut = func(lo, hi uint64, depth int) error {
		n, err := b.estimate(ctx, lo, hi)
		if err != nil {
			return err
		}
		if n == 0 || n < capped || hi-lo < 2 || depth == 0 {
			out = append(out, piece{lo, hi, n})
			return nil
		}
		m := lo + (hi-lo)/2
		if err := cut(lo, m, depth-1); err != nil {
			return err
		}
		return cut(m+1, hi, depth-1)
	}
	err = cut(lo, hi, 64)
	return out, err
}

// estimate is the server's estimate of the source rows with lo ≤ id ≤ hi (table.EstimateRows).
func (b *Backfill) estimate(ctx context.Context, lo, hi uint64) (int64, error) {
	if b.estimator != nil {
		return b.estimator(ctx, lo, hi)
	}
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return table.EstimateRows(ectx, b.src, b.cfg.SourceTable, lo, hi)
}

// syncSegments reads the committed segments into memory, after a split lost to its worker's commit or failed:
// a segment memory does not know (a split that committed though its acknowledgement was lost) is added, for
// an idle worker to claim; a known one takes the committed end (ends only shrink), and one no worker copies
// the committed progress when it is ahead. Memory never goes back: the read may predate a commit that a
// worker has recorded since, and a segment that read as not done would be claimed again and its last chunk
// counted twice.
func (b *Backfill) syncSegments(ctx context.Context) error {
	epoch := b.store.Epoch()
	have, err := b.store.PlanSegments(ctx, nil)
	if err != nil {
		return fmt.Errorf("backfill: reload the checkpoint: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.segsEpoch = epoch
	if b.splitting != nil {
		defer b.endSplit(b.splitting) // a split whose outcome was unknown: the ends below now say it
	}
	for _, s := range have {
		m, known := b.segs[s.ID]
		if !known {
			b.segs[s.ID] = s
			continue
		}
		if _, busy := b.active[s.ID]; !busy && (s.Next > m.Next || s.Done && !m.Done) {
			m.Next, m.Rows, m.Done = s.Next, s.Rows, s.Done
		}
		m.End = min(m.End, s.End)
		b.segs[s.ID] = m
	}
	return nil
}

// syncEnd gives the worker's segment the end a split may have given it since the worker loaded it: ends only
// shrink, and the one in memory is committed (split sets it after its commit).
func (b *Backfill) syncEnd(w *worker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.segs[w.seg.ID]; ok && s.End < w.seg.End {
		w.seg.End = s.End
	}
}

// errSplitUnresolved refuses a split while an earlier one's outcome is unknown.
var errSplitUnresolved = errors.New("an earlier split's outcome is not known yet")

// pendingSplit is a split of segment seg at id at, between its choice and its commit (or failure), which
// closes done.
type pendingSplit struct {
	seg  int
	at   uint64
	done chan struct{}
}

// planChunk is the end of worker w's next chunk in segment id: span ids from lo, within the segment's end as
// the last split left it and below a split being committed, whose end waits for it when lo has reached it.
// The end is recorded as the worker's reach, which a split stays above: the chunks a worker has in flight are
// the one planned last and those before it in the same attempt (the cross-server reader plans the next while
// the writer writes one), so the last plan's end covers them all. ok is false when the segment ends below lo.
// (id is passed, not read from w: the cross-server reader plans while the writer changes w.seg.)
func (b *Backfill) planChunk(ctx context.Context, w *worker, id int, lo, span uint64) (hi uint64, ok bool, err error) {
	for {
		b.mu.Lock()
		end := ^uint64(0)
		if s, known := b.segs[id]; known {
			end = s.End
		}
		if p := b.splitting; p != nil && p.seg == id && p.at <= end {
			if lo >= p.at {
				b.mu.Unlock()
				select {
				case <-p.done:
					continue
				case <-ctx.Done():
					return 0, false, ctx.Err()
				}
			}
			end = p.at - 1
		}
		if lo > end {
			b.mu.Unlock()
			return 0, false, nil
		}
		hi = chunkEnd(lo, span, end)
		w.reach = hi
		b.mu.Unlock()
		return hi, true, nil
	}
}

// setReach lowers the worker's reach to the end its chunk was cut to.
func (b *Backfill) setReach(w *worker, hi uint64) {
	b.mu.Lock()
	w.reach = hi
	b.mu.Unlock()
}

// endSplit ends a pending split: chunks are planned past its point again, within the segment's end. b.mu is held.
func (b *Backfill) endSplit(p *pendingSplit) {
	if b.splitting == p {
		b.splitting = nil
		close(p.done)
	}
}

func (b *Backfill) setEstimate(id int, left int64, rowsAt uint64) {
	b.mu.Lock()
	b.est[id] = segEstimate{left: max(left, 0), rowsAt: rowsAt}
	b.mu.Unlock()
}

// refreshEstimates estimates the rows left in every segment not done, for progress and ETA. InnoDB's range
// estimates are biased (on MariaDB 10.11 they read about twice the rows of a mid-sized range), so they are
// calibrated against what the copy has seen: the rows copied in the segments' done parts against the estimate
// of those same parts. A failure leaves the previous estimates: progress is then less exact, never the copy.
func (b *Backfill) refreshEstimates(ctx context.Context) {
	b.mu.Lock()
	segs := make([]checkpoint.Segment, 0, len(b.segs))
	for _, s := range b.segs {
		segs = append(segs, s)
	}
	b.mu.Unlock()
	var copied, estCopied int64
	for _, s := range segs {
		if s.Rows > 0 && s.Next > s.Start {
			n, err := b.rowsIn(ctx, s.Start, min(s.Next-1, s.End))
			if err != nil {
				b.estimateFailed(ctx, s.ID, err)
				return
			}
			copied, estCopied = copied+int64(s.Rows), estCopied+n
		}
		if s.Done || s.Next > s.End {
			b.setEstimate(s.ID, 0, s.Rows)
			continue
		}
		n, err := b.rowsIn(ctx, s.Next, s.End)
		if err != nil {
			b.estimateFailed(ctx, s.ID, err)
			return
		}
		b.setEstimate(s.ID, n, s.Rows)
	}
	if copied >= minCalibrationRows && estCopied > 0 {
		b.mu.Lock()
		b.estFactor = float64(copied) / float64(estCopied)
		b.mu.Unlock()
	}
}

// minCalibrationRows is the fewest rows copied that calibrate the estimates.
const minCalibrationRows = 500

func (b *Backfill) estimateFailed(ctx context.Context, segment int, err error) {
	if ctx.Err() == nil {
		b.log.Debug("backfill: rows left not estimated", "segment", segment, "err", err)
	}
}

// watchEstimates refreshes the estimates until ctx ends.
func (b *Backfill) watchEstimates(ctx context.Context) {
	t := time.NewTicker(estimateRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.refreshEstimates(ctx)
			b.updateGauges()
		}
	}
}

// rowsLeft is the estimated rows not yet copied, from the segments' estimates; known is false while a
// segment not done has none yet.
func (b *Backfill) rowsLeft() (left int64, known bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.estFactor
	for id, s := range b.segs {
		if s.Done || s.Next > s.End {
			continue
		}
		e, ok := b.est[id]
		if !ok {
			return 0, false
		}
		left += max(int64(float64(e.left)*f)-int64(s.Rows-min(s.Rows, e.rowsAt)), 0)
	}
	return left, true
}
