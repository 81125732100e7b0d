// Package backfill copies the historical rows of the source table into the target by primary-key range:
// resumable (each chunk's rows and its checkpoint commit together), throttled, parallel on disjoint id segments,
// and safe while the binlog stream applies changes beside it (see docs/design.md for the argument).
//
// Two copy paths exist. When both tables live on one server, a chunk is a single
// `INSERT IGNORE … SELECT … LOCK IN SHARE MODE` statement. Across servers, a worker reads a chunk with a locking
// read, streams the rows into LOAD DATA LOCAL or multi-row INSERT IGNORE statements and writes them in one
// target transaction with the segment checkpoint; the source transaction ends only once every row is written,
// and locked, in that transaction, just before its commit. Reading the next chunk overlaps writing the current
// one.
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
// critical and the copy must stop. It is called by every worker before each chunk, concurrently.
type Throttler interface {
	Wait(ctx context.Context) (waited time.Duration, err error)
}

// Hooks are named fault-injection points; nil in production. They are called from worker goroutines,
// concurrently when several workers run.
type Hooks struct {
	// AfterChunkCopied runs after a chunk's target transaction committed and its source locks were released;
	// next is the segment's new next id.
	AfterChunkCopied func(segment int, next uint64)
	// AfterChunkWritten runs once a chunk's rows are written to the target, before its checkpoint write, while
	// its target transaction is open and its source rows are locked.
	AfterChunkWritten func(segment int, lo, hi uint64)
	// BeforeChunkCommit runs once a chunk's rows and checkpoint are written to the target, before the target
	// commit, while the chunk's source rows are still locked.
	BeforeChunkCommit func(segment int, lo, hi uint64)
}

// Config tunes the copy.
type Config struct {
	SourceTable, TargetTable table.Name
	StartID, EndID           uint64 // 0 = the source's MIN(id) / MAX(id) at the first start
	IDBoundary               uint64 // ids at or above are never copied (0 = no boundary)
	// Workers is the number of segments planned at the first start and of segments copied in parallel.
	// Default 2 on both paths (capped at 4 on one server: the statements share one server's CPUs). Across
	// servers, more workers copy no faster where the target's CPUs or its page flushing set the pace, and put
	// more redo in flight past the redo guard's reading (docs/benchmarks.md, "Workers and the redo guard").
	Workers    int
	ChunkBytes int64         // data budget of one chunk (default 8 MiB); at least 64 KiB
	ChunkTime  time.Duration // target duration of one chunk, read to target commit (default 50 ms)
	// ChunkDeadline is the longest a chunk may hold its source rows locked, from the start of its read to its
	// target commit (default 4 × ChunkTime, at least 2 s). A chunk that reaches it is rolled back on both
	// servers and read again, smaller: a slow or hung target cannot hold up the app's changes to those rows.
	ChunkDeadline    time.Duration
	MaxRowsPerSecond float64 // 0 = unlimited
	SameServer       *bool   // nil = where proven (dbconn.SameServer); true = required, refused unless proven; false = never
	// WriteMethod is how the cross-server path writes a chunk: "load-data" (LOAD DATA LOCAL INFILE … IGNORE
	// from memory), "insert" (multi-row INSERT IGNORE), or "auto"/"" (the default): load-data where the target
	// allows LOAD DATA LOCAL and every text column is UTF-8, else insert. Below innodb_autoinc_lock_mode 2 each
	// LOAD DATA is cut to 128 KiB and follows a locking read of the chunk's target rows. LOAD DATA costs the
	// target less CPU per row than parsing INSERT text (docs/benchmarks.md).
	WriteMethod string
	Throttle    Throttler // may be nil
	// MaxAttempts is how many consecutive transient failures of a segment, without progress, end the backfill
	// with an error: 0 = 20 (about 2.5 minutes of backoff), negative = never (the daemon, whose stream
	// beside it also rides out outages of any length).
	MaxAttempts int
	Hooks       Hooks
}

// Errors.
var (
	// ErrRange means the id range cannot be copied safely.
	ErrRange = errors.New("backfill range")
	// ErrSchema means a source row cannot be copied into the target unchanged.
	ErrSchema = errors.New("backfill schema")
	// ErrConfig means the configuration is invalid.
	ErrConfig = errors.New("backfill configuration")
	// errChunkDeadline ends a chunk that held its source rows locked for ChunkDeadline; it is retried smaller.
	errChunkDeadline = errors.New("chunk reached its deadline")
)

// DefaultChunkTime is the default target duration of a chunk: an app UPDATE or DELETE of a row being copied
// waits for its chunk, and 50 ms kept every such wait within the app-impact budget at a throughput within a
// few percent of 500 ms chunks (docs/benchmarks.md).
const DefaultChunkTime = 50 * time.Millisecond

// DefaultChunkDeadline is the chunk deadline for a chunk time: four times it, so that a chunk read while the
// previous one is written, on servers slower than the spanner has learnt, is not cut short, and at least 2 s.
func DefaultChunkDeadline(chunkTime time.Duration) time.Duration {
	return max(4*chunkTime, 2*time.Second)
}

// DefaultWorkers is the number of workers of a Config with Workers 0.
const DefaultWorkers = 2

const (
	maxSameWorkers = 4
	minChunkBytes  = 64 << 10
	// sameServerChunkBytes is the least byte budget of a same-server chunk; larger chunks measured faster there
	// (docs/benchmarks.md).
	sameServerChunkBytes = 64 << 20
	// bulkStatementBytes bounds the row data of one statement that holds CSMHE's AUTO-INC lock to its end (an
	// INSERT … SELECT below innodb_autoinc_lock_mode 2, any insert at 0): a few milliseconds of the server's
	// time, which is what the app's inserts into CSMHE may wait behind it.
	bulkStatementBytes = 128 << 10
)

// Backfill is one copy job. Run it once at a time; Progress, Pause and Resume may be called from any goroutine.
type Backfill struct {
	src, dst *sql.DB
	store    *checkpoint.Store
	m        *metrics.Metrics
	log      *slog.Logger
	cfg      Config
	limiter  *limiter
	rate     *rateWindow
	// the throttled time not yet logged, and when it last was (logThrottled)
	throttleLog   sync.Mutex
	throttled     time.Duration
	throttleLogAt time.Time

	// Set by Run before the workers start, read-only afterwards.
	cols        []string
	idCol       int  // index of id in cols
	otherUnique bool // the target has unique keys besides the primary key
	stmtBudget  int
	maxPacket   int
	rowBytesEst float64 // the source's average row length, until chunks measure it
	selectSQL   string  // cross-server locking read of one chunk
	insertHead  string  // cross-server "INSERT IGNORE INTO t (cols) VALUES "
	loadSQL     string  // cross-server LOAD DATA statement, with %s for the reader's name; "" = INSERT
	sameServer  atomic.Bool
	autoIncMode int    // the target's innodb_autoinc_lock_mode
	bulkRows    int64  // most rows of one same-server INSERT … SELECT below lock mode 2; 0 = a chunk is one statement
	preLock     string // cross-server locking read of a chunk's target rows before its first LOAD DATA; "" = none
	deadline    time.Duration

	bulkMu sync.Mutex // held by the one worker running a statement that holds CSMHE's AUTO-INC lock (oneBulk)

	stealMu   sync.Mutex                                              // held by the one idle worker claiming or splitting a segment
	splitting *pendingSplit                                           // the split being committed or unresolved, if any; guarded by mu
	estimator func(ctx context.Context, lo, hi uint64) (int64, error) // tests' stand-in for EXPLAIN's row estimate

	mu   sync.Mutex
	segs map[int]checkpoint.Segment // committed state of every segment
	// segsEpoch is the migration lock's epoch read before segs was last read whole from the checkpoint (plan,
	// syncSegments): a split, which names its new segment after the ones in segs, writes in that epoch, so
	// once the lock was taken again (and another process may have split meanwhile) it is fenced off until
	// segs is read again.
	segsEpoch uint64
	active    map[int]*worker     // segments a worker copies (the worker, once it has started)
	est       map[int]segEstimate // rows left per segment, estimated
	estFactor float64             // rows copied per row estimated in the copied ranges: calibrates est
	planned   bool
	estRows   int64 // the source's TABLE_ROWS estimate
	done      atomic.Bool
	paused    atomic.Bool
	resumeCh  chan struct{}
}

// New validates the configuration.
func New(src, dst *sql.DB, store *checkpoint.Store, m *metrics.Metrics, log *slog.Logger, cfg Config) (*Backfill, error) {
	switch {
	case src == nil || dst == nil || store == nil || m == nil || log == nil:
		return nil, fmt.Errorf("%w: source, target, store, metrics and logger are required", ErrConfig)
	case cfg.SourceTable.Table == "" || cfg.TargetTable.Table == "":
		return nil, fmt.Errorf("%w: source and target tables are required", ErrConfig)
	case cfg.Workers < 0 || cfg.Workers > 64:
		return nil, fmt.Errorf("%w: workers %d: use 1 to 64", ErrConfig, cfg.Workers)
	case cfg.ChunkBytes != 0 && cfg.ChunkBytes < minChunkBytes:
		return nil, fmt.Errorf("%w: chunk byte budget %d is below 64 KiB", ErrConfig, cfg.ChunkBytes)
	case cfg.ChunkTime < 0 || cfg.MaxRowsPerSecond < 0 || cfg.ChunkDeadline < 0:
		return nil, fmt.Errorf("%w: chunk time, chunk deadline and row rate must not be negative", ErrConfig)
	case cfg.ChunkDeadline != 0 && cfg.ChunkDeadline < cfg.ChunkTime:
		return nil, fmt.Errorf("%w: chunk deadline %s is below the chunk time %s: raise it or lower the chunk time",
			ErrConfig, cfg.ChunkDeadline, cfg.ChunkTime)
	case cfg.EndID != 0 && cfg.StartID > cfg.EndID:
		return nil, fmt.Errorf("%w: start id %d is above end id %d", ErrRange, cfg.StartID, cfg.EndID)
	case cfg.WriteMethod != "" && cfg.WriteMethod != WriteAuto && cfg.WriteMethod != WriteInsert && cfg.WriteMethod != WriteLoadData:
		return nil, fmt.Errorf("%w: write method %q: use %s, %s or %s", ErrConfig, cfg.WriteMethod, WriteAuto, WriteInsert, WriteLoadData)
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = 8 << 20
	}
	if cfg.ChunkTime == 0 {
		cfg.ChunkTime = DefaultChunkTime
	}
	if cfg.ChunkDeadline == 0 {
		cfg.ChunkDeadline = DefaultChunkDeadline(cfg.ChunkTime)
	}
	m.RateLimit.Set(cfg.MaxRowsPerSecond)
	return &Backfill{src: src, dst: dst, store: store, m: m, log: log.With("component", "backfill"), cfg: cfg,
		limiter: newLimiter(cfg.MaxRowsPerSecond), rate: newRateWindow(30 * time.Second), deadline: cfg.ChunkDeadline,
		segs: map[int]checkpoint.Segment{}, active: map[int]*worker{}, est: map[int]segEstimate{}, estFactor: 1, resumeCh: make(chan struct{})}, nil
}

// Run copies every segment not yet done and returns nil when the whole range is copied, ctx.Err() when
// cancelled. Stopping it at any point (even killing the process) loses nothing: the next Run continues each
// segment from its committed next id.
func (b *Backfill) Run(ctx context.Context) error {
	if err := b.prepare(ctx); err != nil {
		return err
	}
	segs, err := b.plan(ctx)
	if err != nil {
		return err
	}
	workers := b.workers()
	b.log.Info("backfill starting", "segments", len(segs), "same_server", b.sameServer.Load(), "workers", workers, "load_data", b.loadSQL != "",
		"columns", len(b.cols), "statement_budget", b.stmtBudget)
	b.refreshEstimates(ctx)
	b.updateGauges()
	ectx, stopEstimates := context.WithCancel(ctx)
	go b.watchEstimates(ectx)
	defer stopEstimates()
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error { return b.work(gctx) })
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	b.done.Store(true)
	b.m.BackfillDone.Set(1)
	b.updateGauges()
	p := b.Progress()
	b.log.Info("backfill done", "rows", p.Copied)
	return nil
}

// SameServer reports whether the same-server path was chosen (valid once Run started).
func (b *Backfill) SameServer() bool { return b.sameServer.Load() }

func (b *Backfill) workers() int {
	w := b.cfg.Workers
	if w == 0 {
		w = DefaultWorkers
	}
	if b.sameServer.Load() {
		return min(w, maxSameWorkers)
	}
	return w
}

// prepare reads what the copy needs from both servers: columns, the copy path, packet and size estimates.
func (b *Backfill) prepare(ctx context.Context) error {
	st, err := table.Load(ctx, b.src, b.cfg.SourceTable)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	tt, err := table.Load(ctx, b.dst, b.cfg.TargetTable)
	if err != nil {
		return fmt.Errorf("backfill: %w", err)
	}
	for _, t := range []*table.Table{st, tt} {
		if err := t.CheckKey(); err != nil {
			return fmt.Errorf("%w: %w", ErrSchema, err)
		}
	}
	if errs, _ := table.Compare(st, tt); len(errs) > 0 {
		return fmt.Errorf("%w: %s cannot hold the rows of %s unchanged: %v", ErrSchema, tt.Name, st.Name, errs)
	}
	// Named columns in the source's order: the target orders them differently (CSMHE's id is the 6th).
	b.cols, b.idCol = b.cols[:0], -1
	for _, c := range st.Columns {
		if tt.Column(c.Name) == nil {
			continue
		}
		if strings.EqualFold(c.Name, table.IDColumn) {
			b.idCol = len(b.cols)
		}
		b.cols = append(b.cols, c.Name)
	}
	b.otherUnique = len(tt.UniqueKeys) > 0
	same, err := b.chooseSameServer(ctx)
	if err != nil {
		return err
	}
	b.sameServer.Store(same)
	if b.maxPacket, err = maxAllowedPacket(ctx, b.dst); err != nil {
		return err
	}
	b.stmtBudget = statementBudget(b.cfg.ChunkBytes, b.maxPacket)
	var tableRows, avgRow sql.NullInt64
	if err := b.src.QueryRowContext(ctx, `SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, st.Name.Schema, st.Name.Table).Scan(&tableRows, &avgRow); err != nil {
		return fmt.Errorf("backfill: read the size of %s: %w", st.Name, err)
	}
	b.rowBytesEst = float64(max(avgRow.Int64, 64))
	cols := quoteCols(b.cols)
	b.selectSQL = "SELECT " + cols + " FROM " + b.cfg.SourceTable.Quoted() + " WHERE " + table.QuoteIdent(table.IDColumn) +
		" BETWEEN ? AND ? ORDER BY " + table.QuoteIdent(table.IDColumn) + " LIMIT ? LOCK IN SHARE MODE"
	b.insertHead = "INSERT IGNORE INTO " + b.cfg.TargetTable.Quoted() + " (" + cols + ") VALUES "
	if b.autoIncMode, err = autoIncLockMode(ctx, b.dst); err != nil {
		return err
	}
	b.bulkRows, b.loadSQL, b.preLock = 0, "", "" // a Run after an earlier one decides again: the target may have changed since
	if b.autoIncMode < 2 {
		// Every statement that may hold CSMHE's AUTO-INC lock is kept to a few milliseconds of work: the app's
		// inserts into CSMHE queue behind it (docs/design.md, "What the copy costs the app").
		b.bulkRows = max(int64(bulkStatementBytes/b.rowBytesEst), 16)
		if b.autoIncMode == 0 { // traditional: even a multi-row INSERT … VALUES holds the table lock
			b.stmtBudget = min(b.stmtBudget, bulkStatementBytes)
		}
	}
	if m := b.cfg.WriteMethod; !same && (m == WriteLoadData || m == "" || m == WriteAuto) {
		err := loadDataUsable(ctx, b.dst, st)
		switch {
		case err != nil && m == WriteLoadData:
			return err
		case err != nil:
			b.log.Info("cross-server chunks are written with INSERT: LOAD DATA LOCAL is not usable here", "reason", err)
		default:
			b.loadSQL = "LOAD DATA LOCAL INFILE 'Reader::%s' IGNORE INTO TABLE " + b.cfg.TargetTable.Quoted() +
				" CHARACTER SET utf8mb4 (" + cols + ")"
		}
		if b.loadSQL != "" && b.autoIncMode < 2 {
			// Each LOAD DATA holds CSMHE's AUTO-INC lock to its end: cut to a few milliseconds of rows, and with
			// the chunk's target rows locked first, so that no LOAD DATA waits for a row lock meanwhile.
			b.stmtBudget = min(b.stmtBudget, bulkStatementBytes)
			b.preLock = preLockSQL(b.cfg.TargetTable)
			b.log.Info("cross-server chunks are written with LOAD DATA of at most 128 KiB each, after a locking read of the chunk's target rows: with innodb_autoinc_lock_mode below 2 each LOAD DATA holds CSMHE's AUTO-INC lock while it runs",
				"innodb_autoinc_lock_mode", b.autoIncMode)
		}
	}
	if !same && b.loadSQL == "" && b.autoIncMode == 0 {
		// Traditional: every INSERT holds CSMHE's AUTO-INC lock to its end, as LOAD DATA does below mode 2.
		b.preLock = preLockSQL(b.cfg.TargetTable)
	}
	b.mu.Lock()
	b.estRows = tableRows.Int64
	b.mu.Unlock()
	return nil
}

// preLockSQL locks a chunk's rows already on the target (the stream's) before any statement of the chunk that
// holds CSMHE's AUTO-INC lock, so that no such statement waits for a row lock while the app's inserts wait for it.
func preLockSQL(target table.Name) string {
	return "SELECT COUNT(*) FROM " + target.Quoted() + " WHERE " + table.QuoteIdent(table.IDColumn) +
		" BETWEEN ? AND ? LOCK IN SHARE MODE"
}

// statementBudget bounds one INSERT statement. Up to stmtsInFlight statements of a worker exist at once, so a
// worker never holds more than the chunk budget (plus one oversized row); the packet limit leaves room for
// the statement head and escaping.
func statementBudget(chunkBytes int64, maxPacket int) int {
	b := min(int64(4<<20), int64(maxPacket/2), chunkBytes/(stmtsInFlight+1))
	return int(max(b, 16<<10))
}

func maxAllowedPacket(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&n); err != nil {
		return 0, fmt.Errorf("backfill: read the target's max_allowed_packet: %w", err)
	}
	return n, nil
}

// plan loads the segments, or captures the range and splits it on the first start.
func (b *Backfill) plan(ctx context.Context) ([]checkpoint.Segment, error) {
	epoch := b.store.Epoch()
	have, err := b.store.PlanSegments(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("backfill: load the plan: %w", err)
	}
	if len(have) == 0 {
		plan, err := b.newPlan(ctx)
		if err != nil {
			return nil, err
		}
		if have, err = b.store.PlanSegments(ctx, plan); err != nil {
			return nil, fmt.Errorf("backfill: save the plan: %w", err)
		}
	} else if add := b.extension(have); len(add) > 0 {
		if have, err = b.store.ExtendPlan(ctx, add); err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
		for _, g := range add {
			b.log.Info("backfill plan extended", "segment", g.ID, "start_id", g.Start, "end_id", g.End)
		}
	}
	for _, s := range have {
		if b.cfg.IDBoundary > 0 && s.End >= s.Start && s.End >= b.cfg.IDBoundary {
			return nil, fmt.Errorf("%w: planned segment %d ends at id %d, at or above the first app-written target id %d",
				ErrRange, s.ID, s.End, b.cfg.IDBoundary)
		}
	}
	b.mu.Lock()
	clear(b.segs)
	for _, s := range have {
		b.segs[s.ID] = s
	}
	b.segsEpoch = epoch
	if b.splitting != nil {
		b.endSplit(b.splitting) // one an earlier Run left unresolved: the ends just read say its outcome
	}
	b.planned = true
	b.mu.Unlock()
	return have, nil
}

// newPlan captures the id range and splits it into segments of equal id span. Rows inserted above the captured
// end later are the binlog stream's to copy.
func (b *Backfill) newPlan(ctx context.Context) ([]checkpoint.Segment, error) {
	lo, hi := b.cfg.StartID, b.cfg.EndID
	empty := []checkpoint.Segment{{ID: 0, Start: 1, End: 0, Next: 1, Done: true}}
	if lo == 0 || hi == 0 {
		mn, mx, err := rangeEnds(ctx, b.src, b.cfg.SourceTable, b.log)
		if err != nil {
			return nil, err
		}
		if !mn.Valid { // empty source: nothing to copy, but record that the plan exists
			b.log.Info("backfill range captured: the source is empty")
			return empty, nil
		}
		if lo == 0 {
			lo = uint64(max(mn.Int64, 0))
		}
		if hi == 0 {
			hi = uint64(max(mx.Int64, 0))
			if b.cfg.IDBoundary > 0 && hi >= b.cfg.IDBoundary {
				return nil, fmt.Errorf("%w: the source's largest id %d is at or above the first app-written target id %d: copying it would overwrite app rows; set --end-id below it or raise the target AUTO_INCREMENT",
					ErrRange, hi, b.cfg.IDBoundary)
			}
		}
	}
	if b.cfg.IDBoundary > 0 && hi >= b.cfg.IDBoundary {
		b.log.Warn("end id capped below the id boundary", "end_id", hi, "id_boundary", b.cfg.IDBoundary)
		hi = b.cfg.IDBoundary - 1
	}
	if lo > hi {
		b.log.Info("backfill range captured: empty", "start_id", lo, "end_id", hi)
		return empty, nil
	}
	plan := splitRange(lo, hi, b.workers())
	b.log.Info("backfill range captured", "start_id", lo, "end_id", hi, "segments", len(plan))
	return plan, nil
}

// extension returns the segments that extend an existing plan over an explicit --start-id below its start
// or --end-id above its end: ids a first start with a narrower range left to nobody (the stream copies only
// the rows it sees change). Copying them later is safe by the same argument as the first copy: the stream's
// position precedes every read of the new segments, and the rows the stream has written there since are
// the latest images, which INSERT IGNORE leaves alone. A flag of 0, or within the plan, extends nothing.
func (b *Backfill) extension(have []checkpoint.Segment) []checkpoint.Segment {
	lo, hi := b.cfg.StartID, b.cfg.EndID
	if lo == 0 && hi == 0 {
		return nil
	}
	if b.cfg.IDBoundary > 0 && hi >= b.cfg.IDBoundary {
		hi = b.cfg.IDBoundary - 1 // as on a first start: ids from the boundary on are the app's
	}
	ranges := extendRanges(have, lo, hi)
	if len(ranges) == 0 {
		return nil
	}
	next := 0
	for _, g := range have {
		next = max(next, g.ID+1)
	}
	var add []checkpoint.Segment
	for _, r := range ranges {
		for _, g := range splitRange(r[0], r[1], b.workers()) {
			g.ID = next
			next++
			add = append(add, g)
		}
	}
	return add
}

// extendRanges returns the id ranges of [lo, hi] outside the plan's span (its lowest start to its highest
// end; empty segments count for nothing): below the span when lo is below its start, above it when hi is
// above its end. A zero lo or hi leaves that side as it is; a plan with no ids takes [lo, hi] whole (both
// needed).
func extendRanges(have []checkpoint.Segment, lo, hi uint64) [][2]uint64 {
	pLo, pHi, found := checkpoint.Span(have)
	if !found {
		if lo == 0 || hi == 0 || lo > hi {
			return nil
		}
		return [][2]uint64{{lo, hi}}
	}
	var out [][2]uint64
	if lo != 0 && lo < pLo {
		out = append(out, [2]uint64{lo, pLo - 1})
	}
	if hi > pHi {
		out = append(out, [2]uint64{pHi + 1, hi})
	}
	return out
}

// splitRange divides [lo, hi] into at most n segments of equal id span.
func splitRange(lo, hi uint64, n int) []checkpoint.Segment {
	total := hi - lo + 1 // hi ≥ lo; ids are below 2^63, so no wrap
	span := (total + uint64(n) - 1) / uint64(n)
	var plan []checkpoint.Segment
	for i := 0; i < n; i++ {
		s := lo + uint64(i)*span
		if s > hi || s < lo {
			break
		}
		e := hi
		if hi-s >= span {
			e = s + span - 1
		}
		plan = append(plan, checkpoint.Segment{ID: i, Start: s, End: e, Next: s})
	}
	return plan
}

func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = table.QuoteIdent(c)
	}
	return strings.Join(q, ", ")
}
