// Package backfill copies the historical rows of the source table into the target by primary-key range:
// resumable (each chunk's rows and its checkpoint commit together), throttled, parallel on disjoint id segments,
// and safe while the binlog stream applies changes beside it (see docs/design.md for the argument).
package backfill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
)

// Throttler blocks while the source is too busy. It returns how long it waited, or an error when the load is
// critical and the copy must stop.
type Throttler interface {
	Wait(ctx context.Context) (time.Duration, error)
}

// Hooks are named fault-injection points; nil in production.
type Hooks struct {
	AfterChunkCopied func(segment int, next uint64) // after a chunk's transaction committed
}

// Config tunes the copy.
type Config struct {
	SourceTable, TargetTable table.Name
	StartID, EndID           uint64 // 0 = the source's MIN(id) / MAX(id) at the first start
	IDBoundary               uint64 // ids at or above are never copied
	Workers                  int
	ChunkBytes               int64         // memory budget of one chunk (default 8 MiB)
	ChunkTime                time.Duration // target duration of one chunk (default 500 ms)
	MaxRowsPerSecond         float64
	SameServer               *bool // nil = detect
	Throttle                 Throttler
	Hooks                    Hooks
}

// ErrRange means the id range cannot be copied safely.
var ErrRange = errors.New("backfill range")

// Backfill is one copy job.
type Backfill struct {
	src, dst *sql.DB
	store    *checkpoint.Store
	m        *metrics.Metrics
	log      *slog.Logger
	cfg      Config

	cols       []string
	sameServer bool
	limiter    *limiter

	mu       sync.Mutex
	segs     map[int]checkpoint.Segment
	planned  bool
	done     atomic.Bool
	copied   atomic.Int64
	rate     *rateWindow
	paused   atomic.Bool
	resumeCh chan struct{}
}

// New validates the configuration.
func New(src, dst *sql.DB, store *checkpoint.Store, m *metrics.Metrics, log *slog.Logger, cfg Config) (*Backfill, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 8 << 20
	}
	if cfg.ChunkBytes < 64<<10 {
		return nil, fmt.Errorf("backfill: chunk byte budget %d is below 64 KiB", cfg.ChunkBytes)
	}
	if cfg.ChunkTime <= 0 {
		cfg.ChunkTime = 500 * time.Millisecond
	}
	if cfg.EndID != 0 && cfg.StartID > cfg.EndID {
		return nil, fmt.Errorf("%w: start id %d is above end id %d", ErrRange, cfg.StartID, cfg.EndID)
	}
	b := &Backfill{src: src, dst: dst, store: store, m: m, log: log.With("component", "backfill"), cfg: cfg,
		segs: map[int]checkpoint.Segment{}, rate: newRateWindow(30 * time.Second), resumeCh: make(chan struct{})}
	b.limiter = newLimiter(cfg.MaxRowsPerSecond)
	return b, nil
}

// Run copies every segment not yet done and returns nil when the whole range is copied.
func (b *Backfill) Run(ctx context.Context) error {
	st, err := table.Load(ctx, b.src, b.cfg.SourceTable)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	tt, err := table.Load(ctx, b.dst, b.cfg.TargetTable)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	b.cols = b.cols[:0]
	for _, c := range st.Columns {
		if tt.Column(c.Name) != nil {
			b.cols = append(b.cols, c.Name)
		}
	}
	if b.cfg.SameServer != nil {
		b.sameServer = *b.cfg.SameServer
	} else if b.sameServer, err = sameServer(ctx, b.src, b.dst); err != nil {
		return err
	}
	segs, err := b.plan(ctx)
	if err != nil {
		return err
	}
	b.log.Info("backfill starting", "segments", len(segs), "same_server", b.sameServer, "workers", b.cfg.Workers)
	b.updateGauges()
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range segs {
		if s.Done {
			continue
		}
		g.Go(func() error { return b.runSegment(gctx, s) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	b.done.Store(true)
	b.m.BackfillDone.Set(1)
	b.updateGauges()
	return nil
}

// SameServer reports which copy path was chosen (valid once Run started).
func (b *Backfill) SameServer() bool { return b.sameServer }

// plan loads the segments, or captures the range and splits it on the first start.
func (b *Backfill) plan(ctx context.Context) ([]checkpoint.Segment, error) {
	have, err := b.store.PlanSegments(ctx, nil)
	if err != nil {
		return nil, err
	}
	if len(have) == 0 {
		var plan []checkpoint.Segment
		if plan, err = b.newPlan(ctx); err != nil {
			return nil, err
		}
		if have, err = b.store.PlanSegments(ctx, plan); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	for _, s := range have {
		b.segs[s.ID] = s
	}
	b.planned = true
	b.mu.Unlock()
	return have, nil
}

func (b *Backfill) newPlan(ctx context.Context) ([]checkpoint.Segment, error) {
	lo, hi := b.cfg.StartID, b.cfg.EndID
	if lo == 0 || hi == 0 {
		var mn, mx sql.NullInt64
		if err := b.src.QueryRowContext(ctx, "SELECT MIN(id), MAX(id) FROM "+b.cfg.SourceTable.Quoted()).Scan(&mn, &mx); err != nil {
			return nil, fmt.Errorf("backfill: capture the id range: %w", err)
		}
		if !mn.Valid { // empty source: nothing to copy, but record that the plan exists
			return []checkpoint.Segment{{ID: 0, Start: 1, End: 0, Next: 1, Done: true}}, nil
		}
		if lo == 0 {
			lo = uint64(mn.Int64)
		}
		if hi == 0 {
			hi = uint64(mx.Int64)
		}
	}
	if b.cfg.IDBoundary > 0 && hi >= b.cfg.IDBoundary {
		return nil, fmt.Errorf("%w: the range ends at %d, at or above the first app-written target id %d: copying it would overwrite app rows; lower --end-id or raise the target AUTO_INCREMENT",
			ErrRange, hi, b.cfg.IDBoundary)
	}
	n := uint64(b.cfg.Workers)
	span := (hi - lo + 1 + n - 1) / n
	var plan []checkpoint.Segment
	for i := uint64(0); i < n; i++ {
		s := lo + i*span
		if s > hi {
			break
		}
		e := min(s+span-1, hi)
		plan = append(plan, checkpoint.Segment{ID: int(i), Start: s, End: e, Next: s})
	}
	b.log.Info("backfill range captured", "start_id", lo, "end_id", hi, "segments", len(plan))
	return plan, nil
}

// runSegment copies one segment chunk by chunk.
func (b *Backfill) runSegment(ctx context.Context, seg checkpoint.Segment) error {
	sp := newSpanner(b.cfg.ChunkTime, b.cfg.ChunkBytes)
	for seg.Next <= seg.End && !seg.Done {
		if err := b.wait(ctx); err != nil {
			return err
		}
		lo := seg.Next
		hi := min(lo+sp.span-1, seg.End)
		if hi < lo { // overflow guard
			hi = seg.End
		}
		var res chunkResult
		err := retry(ctx, b.log, func() error {
			next := seg
			next.Next = hi + 1
			next.Done = hi >= seg.End
			var err error
			if b.sameServer {
				res, err = b.copySame(ctx, next, lo, hi)
			} else {
				res, err = b.copyCross(ctx, next, lo, hi)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("backfill segment %d ids %d-%d: %w", seg.ID, lo, hi, err)
		}
		seg.Next, seg.Done = hi+1, hi >= seg.End
		seg.Rows += uint64(res.rows)
		b.account(seg, res)
		sp.observe(hi-lo+1, res)
		if h := b.cfg.Hooks.AfterChunkCopied; h != nil {
			h(seg.ID, seg.Next)
		}
		b.limiter.take(ctx, res.rows)
	}
	return nil
}

func (b *Backfill) account(seg checkpoint.Segment, res chunkResult) {
	b.mu.Lock()
	b.segs[seg.ID] = seg
	b.mu.Unlock()
	b.copied.Add(res.rows)
	b.rate.add(time.Now(), res.rows)
	b.m.RowsCopied.Add(float64(res.rows))
	b.m.BytesCopied.Add(float64(res.bytes))
	b.updateGauges()
}

// wait blocks while paused or throttled.
func (b *Backfill) wait(ctx context.Context) error {
	for b.paused.Load() {
		b.mu.Lock()
		ch := b.resumeCh
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(time.Second):
		}
	}
	if b.cfg.Throttle != nil {
		waited, err := b.cfg.Throttle.Wait(ctx)
		if err != nil {
			return err
		}
		b.m.ThrottledSecs.Add(waited.Seconds())
	}
	return ctx.Err()
}

// Pause stops workers between chunks until Resume.
func (b *Backfill) Pause() {
	b.paused.Store(true)
	b.m.Paused.Set(1)
}

// Resume undoes Pause.
func (b *Backfill) Resume() {
	if b.paused.Swap(false) {
		b.mu.Lock()
		close(b.resumeCh)
		b.resumeCh = make(chan struct{})
		b.mu.Unlock()
	}
	b.m.Paused.Set(0)
}

func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = table.QuoteIdent(c)
	}
	return strings.Join(q, ", ")
}
