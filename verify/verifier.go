package verify

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
)

// Verifier compares the migrated id range of the source and target tables.
type Verifier struct {
	src, dst *sql.DB
	m        *metrics.Metrics
	log      *slog.Logger
	cfg      Config
}

// New validates the configuration. src and dst may be the same *sql.DB when both tables live on one server.
// Each side needs about Workers+1 connections.
func New(src, dst *sql.DB, m *metrics.Metrics, log *slog.Logger, cfg Config) (*Verifier, error) {
	if src == nil || dst == nil {
		return nil, fmt.Errorf("%w: source and target connections are required", ErrConfig)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: metrics are required (metrics.Discard() for none)", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Verifier{src: src, dst: dst, m: m, log: log.With("component", "verify"), cfg: cfg}, nil
}

// run is the state of one Run.
type run struct {
	v        *Verifier
	src, dst *side
	srcCols  []string // the source's columns, copied by repair
	// stmtBytes bounds one INSERT of a repair: repairStmtBytes, or half the target's max_allowed_packet (MySQL
	// 5.7's default is 4 MiB); a larger row gets a statement of its own.
	stmtBytes int
	led       *ledger // nil when the ledger cannot be written (plain runs go on without it)
	scope     string  // the ledger scope of these tables
	col       *collector
	progMu    sync.Mutex
	done      int
}

// Run compares the tables once. The id range is [StartID, EndID]; a zero end is the highest id present
// when the run starts (the source's, and below IDBoundary also the target's, so rows only the target has
// are found), a zero start the lowest. Nothing at or above IDBoundary is compared. The error is non-nil
// only when the comparison could not be completed; differences are reported in the Result.
func (v *Verifier) Run(ctx context.Context) (*Result, error) {
	start := time.Now()
	r, err := v.prepare(ctx)
	if err != nil {
		return nil, err
	}
	if v.cfg.CatchUp != nil {
		if err := v.cfg.CatchUp(ctx); err != nil {
			return nil, fmt.Errorf("verify: wait for the target to apply the source's changes: %w", err)
		}
	}
	lo, hi, ok, err := r.idRange(ctx)
	if err != nil {
		return nil, err
	}
	res := r.col.res
	if !ok {
		v.log.Info("no rows in the range: nothing to compare")
		r.col.finish()
		res.Duration = time.Since(start)
		return res, nil
	}
	limit := uint64(math.MaxUint64)
	if v.cfg.IDBoundary > 0 {
		limit = v.cfg.IDBoundary - 1
	}
	p := &planner{r: r, lo: lo, hi: hi}
	if err := p.snap(ctx, limit); err != nil {
		return nil, err
	}
	res.Start, res.End = p.lo, p.hi
	v.log.Info("verify starting", "mode", v.cfg.Mode, "start_id", p.lo, "end_id", p.hi, "chunk_rows", v.cfg.ChunkRows,
		"workers", v.cfg.Workers, "incremental", v.cfg.Incremental, "repair", v.cfg.Repair, "ledger", r.led != nil)

	g, gctx := errgroup.WithContext(ctx)
	chunks := make(chan chunk, v.cfg.Workers*2)
	g.Go(func() error { return p.run(gctx, chunks) })
	for range v.cfg.Workers {
		g.Go(func() error {
			for c := range chunks {
				n, err := r.check(gctx, c)
				if err != nil {
					return err
				}
				p.observe(c, n)
				r.progress(p)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	r.col.finish()
	res.Duration = time.Since(start)
	v.log.Info("verify finished", "equal", res.Equal, "chunks_checked", res.ChunksChecked, "chunks_skipped", res.ChunksSkipped,
		"rows", res.RowsChecked, "missing", res.MissingTotal, "extra", res.ExtraTotal, "different", res.DifferentTotal,
		"different_chunks", len(res.DifferentChunks), "repaired", res.Repaired, "took", res.Duration.Round(time.Millisecond))
	return res, nil
}

// prepare reads both tables' definitions, builds the comparison SQL and opens the ledger.
func (v *Verifier) prepare(ctx context.Context) (*run, error) {
	st, err := table.Load(ctx, v.src, v.cfg.SourceTable)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	dt, err := table.Load(ctx, v.dst, v.cfg.TargetTable)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, t := range []*table.Table{st, dt} {
		if err := t.CheckKey(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSchema, err)
		}
	}
	pairs, targetOnly, err := pairColumns(st, dt)
	if err != nil {
		return nil, err
	}
	if len(targetOnly) > 0 {
		v.log.Warn("target columns the source does not have are not compared", "columns", targetOnly)
	}
	r := &run{v: v, col: &collector{res: &Result{Mode: v.cfg.Mode}, max: v.cfg.MaxDiffs}}
	r.src, r.dst = newSides(st, dt, v.src, v.dst, pairs, digestOf(ctx, v.src, v.dst))
	r.srcCols = st.ColumnNames()
	if v.cfg.Repair {
		var maxPacket int
		if err := v.dst.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&maxPacket); err != nil {
			return nil, fmt.Errorf("verify: read the target's max_allowed_packet: %w", err)
		}
		r.stmtBytes = min(repairStmtBytes, maxPacket/2)
	}
	if err := EnsureLedger(ctx, v.dst, v.cfg.TargetTable.Schema); err != nil {
		if v.cfg.Incremental {
			return nil, err
		}
		v.log.Warn("continuing without the ledger: this run cannot serve a later incremental one", "err", err)
		return r, nil
	}
	if r.scope, err = scopeOf(ctx, v.dst, v.cfg.SourceTable, v.cfg.TargetTable, v.cfg.Plan); err != nil {
		return nil, err
	}
	r.led = newLedger(v.dst, v.cfg.TargetTable.Schema)
	return r, nil
}

// idRange resolves the configured range against the tables. ok is false when there is nothing to compare.
func (r *run) idRange(ctx context.Context) (lo, hi uint64, ok bool, err error) {
	cfg := r.v.cfg
	limit := uint64(math.MaxUint64)
	if cfg.IDBoundary > 0 {
		limit = cfg.IDBoundary - 1
	}
	lo, hi = cfg.StartID, cfg.EndID
	if lo == 0 || hi == 0 {
		sides := []*side{r.src}
		// Below a known boundary every target row is a copied one, so the target's own extremes count too
		// (rows the source has lost at either end would otherwise never be seen). Without a boundary the
		// target's top may be the application's rows: only the source decides.
		if cfg.IDBoundary > 0 {
			sides = append(sides, r.dst)
		}
		var found bool
		for _, s := range sides {
			var mn, mx sql.NullInt64
			q := "SELECT MIN(" + s.id + "), MAX(" + s.id + ") FROM " + s.table + " WHERE " + s.id + " <= ?"
			if err := s.db.QueryRowContext(ctx, q, limit).Scan(&mn, &mx); err != nil {
				return 0, 0, false, fmt.Errorf("verify: read the id range of %s: %w", s.table, err)
			}
			if !mn.Valid {
				continue
			}
			if !found {
				found = true
				if cfg.StartID == 0 {
					lo = uint64(mn.Int64)
				}
				if cfg.EndID == 0 {
					hi = uint64(mx.Int64)
				}
				continue
			}
			if cfg.StartID == 0 {
				lo = min(lo, uint64(mn.Int64))
			}
			if cfg.EndID == 0 {
				hi = max(hi, uint64(mx.Int64))
			}
		}
		if !found {
			return 0, 0, false, nil
		}
	}
	hi = min(hi, limit)
	return lo, hi, lo <= hi, nil
}

func (r *run) progress(p *planner) {
	f := r.v.cfg.Progress
	r.progMu.Lock()
	defer r.progMu.Unlock()
	r.done++
	if f != nil {
		f(r.done, max(p.total(), r.done))
	}
}
