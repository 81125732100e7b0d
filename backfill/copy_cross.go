package backfill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
)

// stmtsInFlight bounds the INSERT statements of one worker that exist at once (one being built, the others
// queued or executing); with statementBudget it bounds a worker's memory.
const stmtsInFlight = 3

type insertStmt struct {
	sql  string
	rows int64
}

// crossChunk is one chunk on its way from the source to the target.
type crossChunk struct {
	lo, hi  uint64 // the reader lowers hi to the last id read when the row cap cut the chunk short
	planned uint64 // hi as the chunk was planned, before the reader lowered it
	started time.Time
	stmts   chan insertStmt // closed by the reader once the chunk is read, also on error
	err     error           // the read's error, set before stmts is closed
	read    int64
	bytes   int64
	stx     *sql.Tx         // the source transaction holding the chunk's shared locks
	sess    *dbconn.Session // stx's connection, killed on the server when the chunk's deadline ends stx
	once    sync.Once
	ended   atomic.Bool
	size    atomic.Int64 // the bytes of a one-id chunk's row, for the deadline timer

	// ctx carries the chunk's work on both servers. It ends with the copy, and at the chunk's deadline, when
	// the timer started with the source transaction also rolls that transaction back, wherever the reader and
	// the writer are: the chunk's source rows are never locked for longer, whatever the target does.
	ctx     context.Context
	cancel  context.CancelCauseFunc
	tmu     sync.Mutex // guards timer, which the deadline may arm again from its own callback
	timer   *time.Timer
	stxDone context.CancelFunc // ends the source transaction's context
	expired *atomic.Bool       // set when a chunk of the copy reached its deadline
}

// release ends the source transaction, letting production change the chunk's rows again.
func (c *crossChunk) release(commit bool) {
	c.once.Do(func() {
		c.ended.Store(true)
		c.tmu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.tmu.Unlock()
		if c.stx != nil {
			if commit {
				_ = dbconn.Commit(context.Background(), c.stx) // nothing was written; an error only means the locks went with the connection
			} else {
				_ = c.stx.Rollback()
			}
		}
		if c.sess != nil {
			_ = c.sess.Close() // before stxDone, which would have the session killed
		}
		if c.stxDone != nil {
			c.stxDone()
		}
	})
}

// fatRowRate is the slowest a single row is assumed to travel and be written, in bytes per second. A chunk of
// one id locks one row; a row of many megabytes may need longer than the deadline only to cross and be
// written, and would then fail at every attempt, however small the chunk. Such a chunk's deadline is
// lengthened by its row's size at this rate: 16 MiB of state may hold its one row for 16 s more. A chunk of
// ordinary rows gains milliseconds, and one of more ids nothing: it is shrunk instead. maxFatRowWait bounds
// the lengthening whatever the row (a 1 GiB max_allowed_packet would otherwise allow 17 minutes).
const (
	fatRowRate    = 1 << 20
	maxFatRowWait = time.Minute
)

// allowed is the chunk's deadline d, lengthened for a chunk of one id by the size of its row once read.
func (c *crossChunk) allowed(d time.Duration) time.Duration {
	if c.lo != c.planned {
		return d
	}
	return d + min(time.Duration(float64(c.size.Load())/fatRowRate*float64(time.Second)), maxFatRowWait)
}

// startDeadline arms the chunk's deadline as its source transaction begins and returns the context that
// transaction runs in: not the copy's, which a cancellation would end while the target commit may still be
// under way, but one that only the deadline or release ends.
func (c *crossChunk) startDeadline(ctx context.Context, d time.Duration, log *slog.Logger) context.Context {
	sctx, done := context.WithCancel(context.WithoutCancel(ctx))
	c.stxDone = done
	lengthened := false
	var fire func()
	fire = func() {
		c.tmu.Lock()
		defer c.tmu.Unlock()
		if c.ended.Load() {
			return
		}
		if left := c.allowed(d) - time.Since(c.started); left > 0 {
			if !lengthened {
				lengthened = true
				log.Warn("backfill chunk of one large row needs longer than the chunk deadline: its deadline is lengthened by the row's size",
					"id", c.lo, "bytes", c.size.Load(), "deadline", c.allowed(d).Round(time.Millisecond))
			}
			c.timer = time.AfterFunc(left, fire)
			return
		}
		log.Warn("backfill chunk reached its deadline: its source rows are released and it is read again, smaller",
			"chunk_lo", c.lo, "deadline", c.allowed(d).Round(time.Millisecond))
		c.expired.Store(true)
		c.cancel(errChunkDeadline)
		done() // database/sql rolls the source transaction back: its locks go now
	}
	c.tmu.Lock()
	c.timer = time.AfterFunc(d, fire)
	c.tmu.Unlock()
	return sctx
}

// copyCross copies the worker's segment from next_id to its end through a reader and a writer goroutine: the
// reader streams chunk n+1 from the source while the writer writes chunk n. Each chunk's source transaction
// stays open until every row of the chunk is written, and locked, in the target transaction that also holds
// its checkpoint, and ends just before that transaction commits. It returns nil
// when the segment is done; on error every open source transaction is rolled back and the caller retries
// from the checkpoint.
func (b *Backfill) copyCross(ctx context.Context, w *worker) error {
	g, gctx := errgroup.WithContext(ctx)
	chunks := make(chan *crossChunk, 1)
	tokens := make(chan struct{}, stmtsInFlight)
	var mu sync.Mutex
	var open []*crossChunk
	var expired atomic.Bool
	track := func(c *crossChunk) {
		mu.Lock()
		defer mu.Unlock()
		kept := open[:0]
		for _, o := range open {
			if !o.ended.Load() {
				kept = append(kept, o)
			}
		}
		c.expired = &expired
		open = append(kept, c)
	}
	start, id := w.seg.Next, w.seg.ID
	g.Go(func() error {
		plan := func(lo, span uint64) (uint64, bool, error) { return b.planChunk(gctx, w, id, lo, span) }
		return b.readChunks(gctx, w.sp, start, plan, chunks, tokens, track)
	})
	g.Go(func() error {
		for c := range chunks {
			if err := b.writeChunk(c.ctx, w, c, tokens); err != nil {
				return err // copyCross says whether a deadline caused it
			}
		}
		return nil
	})
	err := g.Wait()
	mu.Lock()
	for _, c := range open {
		c.release(false)
		c.cancel(nil)
	}
	mu.Unlock()
	if err != nil && ctx.Err() == nil && expired.Load() && !errors.Is(err, errChunkDeadline) {
		// The deadline cut a statement short: the driver reports a cancelled context or a closed connection.
		err = fmt.Errorf("%w: %v", errChunkDeadline, err)
	}
	return err
}

// readChunks is the reader: it waits for the throttle, then reads chunk after chunk into statements.
func (b *Backfill) readChunks(ctx context.Context, sp *spanner, lo uint64, plan func(lo, span uint64) (uint64, bool, error),
	out chan<- *crossChunk, tokens chan struct{}, track func(*crossChunk)) error {
	defer close(out)
	for {
		if err := b.wait(ctx); err != nil {
			return err
		}
		span, rowCap := sp.next()
		hi, ok, err := plan(lo, span) // a split may have shortened the segment
		if err != nil || !ok {
			return err
		}
		c := &crossChunk{lo: lo, hi: hi, stmts: make(chan insertStmt, 1)}
		c.planned = c.hi
		c.ctx, c.cancel = context.WithCancelCause(ctx)
		track(c)
		select {
		case out <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.err = b.readChunk(c.ctx, c, rowCap, tokens)
		close(c.stmts)
		if c.err != nil {
			return c.err
		}
		if err := b.limit(ctx, c.read); err != nil {
			return err
		}
		if c.hi == ^uint64(0) {
			return nil
		}
		lo = c.hi + 1
	}
}

// readChunk reads one chunk with a locking read and hands it to the writer as INSERT statements.
func (b *Backfill) readChunk(ctx context.Context, c *crossChunk, rowCap int64, tokens chan struct{}) error {
	c.started = time.Now()
	sctx := c.startDeadline(ctx, b.deadline, b.log)
	// At the deadline the session is killed on the source too: a locking read the deadline cuts off while it
	// waits for a row the app holds would otherwise keep the rows it has locked until its lock wait ends.
	sess, err := dbconn.HoldSession(sctx, b.src)
	if err != nil {
		return err
	}
	c.sess = sess
	stx, err := sess.BeginTx(sctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	c.stx = stx
	// A prepared statement makes the server answer in the binary protocol: doubles arrive as float64 values the
	// driver prints in their shortest exact form, where the text protocol may round them.
	ps, err := stx.PrepareContext(ctx, b.selectSQL)
	if err != nil {
		return err
	}
	defer ps.Close()
	rows, err := ps.QueryContext(ctx, c.lo, c.hi, rowCap)
	if err != nil {
		return err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	kinds := sqllit.Kinds(types)
	vals := make([]sql.RawBytes, len(types))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var sb *strings.Builder
	var cur insertStmt
	var last uint64
	send := func() error {
		if cur.rows == 1 && sb.Len() > b.maxPacket-1024 {
			return fmt.Errorf("%w: row id %d needs a %d-byte INSERT, above the target's max_allowed_packet %d: raise max_allowed_packet on the target",
				ErrSchema, last, sb.Len(), b.maxPacket)
		}
		cur.sql = sb.String()
		select {
		case c.stmts <- cur:
		case <-ctx.Done():
			return ctx.Err()
		}
		sb, cur = nil, insertStmt{}
		return nil
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if c.lo == c.planned { // the deadline timer reads the row's size before it is formatted (allowed)
			var n int
			for _, v := range vals {
				n += len(v)
			}
			c.size.Store(int64(n))
		}
		if last, err = strconv.ParseUint(string(vals[b.idCol]), 10, 64); err != nil {
			return fmt.Errorf("read id: %w", err)
		}
		if sb != nil && cur.rows > 0 && sb.Len()+sqllit.MaxRowBytes(vals) > b.maxPacket-1024 {
			// With this row the statement could pass the target's max_allowed_packet: the row starts the next.
			if err := send(); err != nil {
				return err
			}
		}
		if sb == nil {
			select { // a free statement slot: bounds the memory of the worker
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			sb = &strings.Builder{}
			sb.Grow(min(b.stmtBudget, 64<<10))
			if b.loadSQL == "" {
				sb.WriteString(b.insertHead)
			}
		} else if b.loadSQL == "" {
			sb.WriteByte(',')
		}
		before := sb.Len()
		if b.loadSQL != "" {
			sqllit.TSVRow(sb, vals)
		} else {
			sqllit.Row(sb, vals, kinds)
		}
		c.bytes += int64(sb.Len() - before)
		c.read++
		cur.rows++
		if sb.Len() >= b.stmtBudget {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if sb != nil {
		if err := send(); err != nil {
			return err
		}
	}
	if c.read >= rowCap {
		c.hi = last // cut at the row cap: the next chunk starts after the last row copied
	}
	return nil
}

// writeChunk is the writer's part of one chunk: its statements and the segment checkpoint in one target
// transaction, then the source transaction ends.
func (b *Backfill) writeChunk(ctx context.Context, w *worker, c *crossChunk, tokens chan struct{}) error {
	dtx, err := b.beginTarget(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	defer dtx.Rollback()
	if b.preLock != "" {
		// Rows of the chunk's range already on the target (the stream's) are locked here, where a wait for a
		// stream lane holds nothing the app's inserts need, rather than inside a LOAD DATA.
		if err := dtx.QueryRowContext(ctx, b.preLock, c.lo, c.planned).Scan(new(int64)); err != nil {
			return err
		}
	}
	var inserted int64
	for s := range c.stmts { // the reader always closes stmts, also on error or cancellation
		var err error
		if b.bulkTurns() {
			// As on one server (copySameTx): a chunk that a split cut short (possible only after a split's
			// lost acknowledgement) gives way before its next statement that takes the bulk turn.
			err = b.chunkInSegment(w, c.planned)
		}
		switch {
		case err != nil:
		case b.loadSQL != "":
			err = b.oneBulk(b.autoIncMode < 2, func() error { return b.execLoad(ctx, dtx, s, &inserted) })
		default:
			err = b.oneBulk(b.autoIncMode == 0, func() error { return b.execInsert(ctx, dtx, s, &inserted) })
		}
		<-tokens
		if err != nil {
			return err
		}
	}
	if c.err != nil {
		return c.err
	}
	if h := b.cfg.Hooks.AfterChunkWritten; h != nil {
		h(w.seg.ID, c.lo, c.hi)
	}
	if err := b.chunkInSegment(w, c.hi); err != nil {
		return err
	}
	next := nextSegment(w.seg, c.hi, inserted)
	if err := b.store.SaveSegment(ctx, dtx, w.epoch, w.seg, next); err != nil {
		return err
	}
	if h := b.cfg.Hooks.BeforeChunkCommit; h != nil {
		h(next.ID, c.lo, c.hi)
	}
	// Every row of the chunk is now written, and locked, in the target transaction; from here on a stream
	// change to one of them waits for this commit. The source transaction must have held its locks up to
	// this point: if its connection was lost, the locks went with it, a source change may already have been
	// applied ahead of these rows, and the chunk must be read again.
	if err := c.stx.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err != nil {
		return fmt.Errorf("source transaction lost before the target commit: %w", err)
	}
	// Production may change these rows again from here: a change reaches the target through the stream, whose
	// write of a row waits for this transaction's lock on it. Releasing before the commit spares the app's
	// writes of the chunk's rows the target's commit (its binlog write and fsync).
	c.release(true)
	// The commit runs to its end (bounded by dbconn.CommitTimeout) even when the copy is being stopped.
	if err := dbconn.Commit(context.WithoutCancel(ctx), dtx); err != nil {
		return err
	}
	// ctx is c.ctx, which the target transaction lived in. It ends here, once the reader is done with the chunk,
	// and on an error only with the copy: ended now, the reader's "context canceled" could reach the errgroup
	// before this writer's own error, and a transient failure would look final.
	c.cancel(nil)
	b.committed(w, next, chunkStats{lo: c.lo, hi: c.hi, read: c.read, inserted: inserted, bytes: c.bytes,
		took: time.Since(c.started)})
	return nil
}

// bulkTurns says whether the cross-server writers' statements take turns (oneBulk): LOAD DATA below lock
// mode 2, INSERT at mode 0.
func (b *Backfill) bulkTurns() bool {
	if b.loadSQL != "" {
		return b.autoIncMode < 2
	}
	return b.autoIncMode == 0
}

func (b *Backfill) execInsert(ctx context.Context, tx *sql.Tx, s insertStmt, inserted *int64) error {
	res, err := tx.ExecContext(ctx, s.sql)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	*inserted += n
	return b.checkWarnings(ctx, tx)
}
