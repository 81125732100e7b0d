package backfill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/clock"
)

const (
	defaultMaxAttempts = 20 // consecutive transient failures without progress before a segment gives up
	retryBackoff       = 100 * time.Millisecond
	maxBackoff         = 10 * time.Second
)

// worker copies one segment. seg is the segment's committed state: only the goroutine that commits a chunk
// (or the retry loop between attempts) changes it.
type worker struct {
	seg   checkpoint.Segment
	sp    *spanner
	epoch uint64 // checkpoint fence epoch read before seg was loaded
	// reach is the end of the chunk planned last (planChunk), lowered when the chunk is cut shorter; guarded by
	// Backfill.mu. A split lands above it, never inside a chunk in flight.
	reach uint64
}

// chunkStats describe one committed chunk.
type chunkStats struct {
	lo, hi   uint64
	read     int64 // rows read from the source
	inserted int64 // rows the target did not have yet
	bytes    int64
	took     time.Duration // from the start of the read to the target commit
}

// runSegment copies one segment, retrying transient failures (lock waits, deadlocks, lost connections) with
// backoff. A retry re-reads the segment's checkpoint: a commit whose acknowledgement was lost may have
// succeeded, and the checkpoint, not memory, says where to continue.
func (b *Backfill) runSegment(ctx context.Context, seg checkpoint.Segment, sp *spanner) error {
	w := &worker{seg: seg, sp: sp}
	b.mu.Lock()
	b.active[seg.ID] = w
	b.mu.Unlock()
	failures := 0
	delay := retryBackoff
	stale := true // memory may be behind the checkpoint: at the start (the lock may have been taken again since the plan was read) and after a failure
	for b.syncEnd(w); !w.finished(); b.syncEnd(w) {
		before := w.seg.Next
		var err error
		if stale {
			err = b.reload(ctx, w)
		}
		if err == nil {
			stale = false
			if b.sameServer.Load() {
				err = b.copySame(ctx, w)
			} else {
				err = b.copyCross(ctx, w)
			}
		}
		if err == nil {
			continue
		}
		stale = true
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errPastSplit) {
			// Not a failure: a split shortened the segment under a chunk planned before it. The chunk was
			// rolled back; it is read again at once, within the new end.
			b.log.Debug("backfill chunk reached past a split; reading it again within the segment", "segment", w.seg.ID, "next_id", w.seg.Next)
			continue
		}
		deadline := errors.Is(err, errChunkDeadline)
		if !deadline && !dbconn.IsTransient(err) && !errors.Is(err, checkpoint.ErrFenced) && !errors.Is(err, checkpoint.ErrSegmentMoved) {
			return fmt.Errorf("backfill segment %d at id %d: %w", w.seg.ID, w.seg.Next, err)
		}
		if w.seg.Next != before {
			failures, delay = 0, retryBackoff
		}
		if failures++; b.cfg.MaxAttempts >= 0 && failures > cmp.Or(b.cfg.MaxAttempts, defaultMaxAttempts) {
			return fmt.Errorf("backfill segment %d at id %d: %d attempts failed: %w", w.seg.ID, w.seg.Next, failures, err)
		}
		if deadline || dbconn.ServerError(err, 1205, 1213) {
			w.sp.shrink() // fewer rows locked per chunk, fewer collisions with production writes, a shorter chunk
		}
		if deadline {
			b.m.ChunkDeadlines.Inc()
		}
		b.log.Warn("backfill chunk failed, retrying", "segment", w.seg.ID, "next_id", w.seg.Next, "attempt", failures, "err", err)
		if err := clock.Sleep(ctx, delay/2+time.Duration(rand.Int64N(int64(delay)))); err != nil {
			return err
		}
		delay = min(delay*2, maxBackoff)
	}
	return nil
}

// errPastSplit ends a chunk that reaches past its segment's end, which a split lowered after the chunk was
// planned. It is a checkpoint.ErrSegmentMoved.
var errPastSplit = fmt.Errorf("%w: a split took the ids above the segment's new end", checkpoint.ErrSegmentMoved)

func (w *worker) finished() bool { return w.seg.Done || w.seg.Next > w.seg.End }

// reload replaces the worker's segment state with the committed checkpoint.
func (b *Backfill) reload(ctx context.Context, w *worker) error {
	w.epoch = b.store.Epoch()
	have, err := b.store.PlanSegments(ctx, nil)
	if err != nil {
		return fmt.Errorf("backfill: reload the checkpoint: %w", err)
	}
	for _, s := range have {
		if s.ID != w.seg.ID || s.Next == w.seg.Next && s.End == w.seg.End && s.Rows == w.seg.Rows && s.Done == w.seg.Done {
			continue
		}
		if s.Next != w.seg.Next {
			b.log.Info("backfill chunk had committed before its error", "segment", s.ID, "next_id", s.Next)
		}
		if s.Rows > w.seg.Rows {
			b.m.RowsCopied.Add(float64(s.Rows - w.seg.Rows))
		}
		b.mu.Lock()
		if m, ok := b.segs[s.ID]; ok && m.End < s.End {
			s.End = m.End // the read may predate a split that memory has since recorded; ends only shrink
		}
		b.segs[s.ID] = s
		b.mu.Unlock()
		w.seg = s
	}
	return nil
}

// committed records a chunk whose target transaction has committed.
func (b *Backfill) committed(w *worker, next checkpoint.Segment, c chunkStats) {
	w.seg = next
	w.sp.observe(c)
	b.mu.Lock()
	if s, ok := b.segs[next.ID]; ok && s.End < next.End {
		next.End = s.End // a split committed after this chunk; ends only shrink
	}
	b.segs[next.ID] = next
	b.mu.Unlock()
	b.rate.add(time.Now(), c.inserted)
	b.m.RowsCopied.Add(float64(c.inserted))
	b.m.BytesCopied.Add(float64(c.bytes))
	b.updateGauges()
	if h := b.cfg.Hooks.AfterChunkCopied; h != nil {
		h(next.ID, next.Next)
	}
}

// chunkInSegment checks, just before a chunk's checkpoint write, that the chunk ends within its segment: a
// split may have given the ids above some point to another worker since the chunk was planned. If so, the
// chunk is rolled back and read again within the shortened segment (errPastSplit, retried at once).
func (b *Backfill) chunkInSegment(w *worker, hi uint64) error {
	b.syncEnd(w)
	if hi > w.seg.End {
		return fmt.Errorf("%w: segment %d now ends at id %d, below the chunk's end %d", errPastSplit, w.seg.ID, w.seg.End, hi)
	}
	return nil
}

// nextSegment is the segment state after a chunk ending at hi with inserted new rows.
func nextSegment(s checkpoint.Segment, hi uint64, inserted int64) checkpoint.Segment {
	s.Next = hi + 1
	s.Done = hi >= s.End
	s.Rows += uint64(inserted)
	return s
}

// wait blocks while paused or throttled, before a chunk is read.
func (b *Backfill) wait(ctx context.Context) error {
	for b.paused.Load() {
		b.mu.Lock()
		ch := b.resumeCh
		b.mu.Unlock()
		if !b.paused.Load() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
	if b.cfg.Throttle != nil {
		waited, err := b.throttleWait(ctx)
		b.logThrottled(waited)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("backfill throttle: %w", err)
		}
	}
	return ctx.Err()
}

// limit applies --max-rows-per-second after rows were read.
func (b *Backfill) limit(ctx context.Context, rows int64) error {
	waited, err := b.limiter.take(ctx, rows)
	b.m.ThrottledSecs.Add(waited.Seconds())
	return err
}

// SetRate changes --max-rows-per-second of the running copy (0 = no limit), from its next chunk on; a worker
// waiting for the old limit goes on at the new one. The change lasts until the process ends: a restart takes
// the flag again.
func (b *Backfill) SetRate(rowsPerSecond float64) {
	b.mu.Lock() // two changes at once leave the gauge, and the last log line, at the limit in force
	old := b.limiter.setRate(rowsPerSecond)
	b.m.RateLimit.Set(rowsPerSecond)
	b.log.Info("backfill rate limit changed", "from_rows_per_second", old, "to_rows_per_second", rowsPerSecond)
	b.mu.Unlock()
}

// Pause stops the workers before their next chunk until Resume; chunks in flight finish and commit.
func (b *Backfill) Pause() {
	b.mu.Lock() // a Pause and a Resume at once leave the gauge as the state they leave
	b.paused.Store(true)
	b.m.Paused.Set(1)
	b.log.Info("backfill paused")
	b.mu.Unlock()
}

// Resume undoes Pause.
func (b *Backfill) Resume() {
	b.mu.Lock()
	if b.paused.Swap(false) {
		close(b.resumeCh)
		b.resumeCh = make(chan struct{})
		b.log.Info("backfill resumed")
	}
	b.m.Paused.Set(0)
	b.mu.Unlock()
}

// throttleWait waits on the throttler and counts the time in csmh_sync_backfill_throttled_seconds_total as it
// passes, not only when the wait ends: a throttle that lasts an hour must not look like a stalled backfill.
func (b *Backfill) throttleWait(ctx context.Context) (time.Duration, error) {
	var counted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				b.m.ThrottledSecs.Add(1)
				counted.Add(int64(time.Second))
			}
		}
	})
	waited, err := b.cfg.Throttle.Wait(ctx)
	close(stop)
	wg.Wait()
	if rest := waited - time.Duration(counted.Load()); rest > 0 {
		b.m.ThrottledSecs.Add(rest.Seconds())
	}
	return waited, err
}

// throttleLogEvery spaces the "backfill was throttled" lines: a copy paced by the latency guard waits before
// every chunk, and a line per chunk would drown the log.
const throttleLogEvery = 30 * time.Second

// logThrottled adds a wait to the throttled time and logs it, at most every throttleLogEvery, once a second or
// more of waiting has gathered.
func (b *Backfill) logThrottled(waited time.Duration) {
	b.throttleLog.Lock()
	defer b.throttleLog.Unlock()
	b.throttled += waited
	if b.throttled >= time.Second && time.Since(b.throttleLogAt) >= throttleLogEvery {
		b.log.Info("backfill was throttled", "waited", b.throttled.Round(time.Millisecond))
		b.throttled, b.throttleLogAt = 0, time.Now()
	}
}
