package backfill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

// copySame copies the worker's segment chunk by chunk with one server-side statement per chunk. LOCK IN SHARE
// MODE holds the source rows until the transaction, which also records the segment's progress, commits (a
// plain INSERT … SELECT reads without locks under READ COMMITTED). It returns nil when the segment is done.
func (b *Backfill) copySame(ctx context.Context, w *worker) error {
	id := table.QuoteIdent(table.IDColumn)
	cols := quoteCols(b.cols)
	insert := "INSERT IGNORE INTO " + b.cfg.TargetTable.Quoted() + " (" + cols + ") SELECT " + cols + " FROM " +
		b.cfg.SourceTable.Quoted() + " WHERE " + id + " BETWEEN ? AND ? LOCK IN SHARE MODE"
	probe := "SELECT " + id + " FROM " + b.cfg.SourceTable.Quoted() + " WHERE " + id + " BETWEEN ? AND ? ORDER BY " +
		id + " LIMIT 1 OFFSET ?"
	for !w.finished() {
		if err := b.wait(ctx); err != nil {
			return err
		}
		span, rowCap := w.sp.next()
		lo := w.seg.Next
		hi, ok, err := b.planChunk(ctx, w, w.seg.ID, lo, span)
		if err != nil {
			return err
		}
		if !ok {
			b.syncEnd(w)
			return nil // a split took the rest of the segment
		}
		// A span grown over deleted history may reach dense rows again: cut the chunk at the row cap so one
		// statement never locks an unbounded number of rows. The probe reads the primary key only up to the cap.
		if hi-lo >= uint64(rowCap) {
			var cut uint64
			err := b.src.QueryRowContext(ctx, probe, lo, hi, rowCap).Scan(&cut)
			switch {
			case err == nil:
				hi = cut - 1
				b.setReach(w, hi)
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("probe chunk end: %w", err)
			}
		}
		n, err := b.copySameChunk(ctx, w, insert, lo, hi)
		if err != nil {
			return err
		}
		if err := b.limit(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backfill) copySameChunk(ctx context.Context, w *worker, insert string, lo, hi uint64) (int64, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeoutCause(ctx, b.deadline, errChunkDeadline)
	defer cancel()
	n, err := b.copySameTx(cctx, w, insert, lo, hi, start)
	if err != nil && ctx.Err() == nil && context.Cause(cctx) == errChunkDeadline {
		// The driver closed the connection; the server rolls the chunk back as it notices, at the latest when a
		// lock wait ends (innodb_lock_wait_timeout).
		return 0, fmt.Errorf("%w: %v", errChunkDeadline, err)
	}
	return n, err
}

func (b *Backfill) copySameTx(ctx context.Context, w *worker, insert string, lo, hi uint64, start time.Time) (int64, error) {
	// At the chunk deadline the session is killed on the server too: a statement the deadline cuts off while it
	// waits for a row the app holds would otherwise keep the rows it has locked until its lock wait ends.
	sess, err := dbconn.HoldSession(ctx, b.dst)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	// READ COMMITTED: the shared locks are on the chunk's rows only, no gap locks that would hold up the app's
	// inserts at the end of the table while the last chunk is copied.
	tx, err := b.beginTargetOn(ctx, sess, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	spans := [][2]uint64{{lo, hi}}
	if b.bulkRows > 0 {
		if spans, err = b.lockSpans(ctx, tx, lo, hi); err != nil {
			return 0, err
		}
	}
	var n int64
	for _, sp := range spans {
		if b.bulkRows > 0 {
			// A split lands above every chunk in flight (planChunk). Only one whose commit was reported failed
			// but happened, found later in the checkpoint (syncSegments), can have given the top of this chunk to
			// another worker, whose statement would then wait for this chunk's rows holding CSMHE's AUTO-INC lock
			// and the turn this chunk needs for its next statement: a cycle InnoDB cannot see. Checked before
			// each statement, outside the turn, the chunk gives way at once (rolled back, read again).
			if err := b.chunkInSegment(w, hi); err != nil {
				return 0, err
			}
		}
		var res sql.Result
		err := b.oneBulk(b.bulkRows > 0, func() (err error) {
			res, err = tx.ExecContext(ctx, insert, sp[0], sp[1])
			return err
		})
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		n += k
		if err := b.checkWarnings(ctx, tx); err != nil {
			return 0, err
		}
	}
	if h := b.cfg.Hooks.AfterChunkWritten; h != nil {
		h(w.seg.ID, lo, hi)
	}
	if err := b.chunkInSegment(w, hi); err != nil {
		return 0, err
	}
	next := nextSegment(w.seg, hi, n)
	if err := b.store.SaveSegment(ctx, tx, w.epoch, w.seg, next); err != nil {
		return 0, err
	}
	if h := b.cfg.Hooks.BeforeChunkCommit; h != nil {
		h(next.ID, lo, hi)
	}
	sess.Disarm()                                                         // the commit runs to its end: a KILL in the middle would leave its outcome to be found out
	if err := dbconn.Commit(context.WithoutCancel(ctx), tx); err != nil { // bounded by dbconn.CommitTimeout, not by a stop
		return 0, err
	}
	b.committed(w, next, chunkStats{lo: lo, hi: hi, read: n, inserted: n,
		bytes: int64(float64(n) * b.rowBytesEst), took: time.Since(start)})
	return n, nil
}

// chunkEnd is the last id of a chunk of span ids starting at lo, within a segment ending at end.
func chunkEnd(lo, span, end uint64) uint64 {
	if span == 0 || end-lo < span { // end ≥ lo here
		return end
	}
	return lo + span - 1
}

// lockSpans serves innodb_autoinc_lock_mode 0 and 1, where an INSERT … SELECT holds CSMHE's AUTO-INC lock until
// it ends and the app's inserts into CSMHE wait behind it. It first locks the chunk's source rows with a plain
// locking read, which holds no lock on CSMHE: waiting for an app transaction on a CSMH row happens here, not
// inside an INSERT that the app's inserts queue behind. It returns id spans of at most bulkRows rows each,
// for INSERT … SELECT statements that then find every row already locked by this transaction and take a few
// milliseconds each.
func (b *Backfill) lockSpans(ctx context.Context, tx *sql.Tx, lo, hi uint64) ([][2]uint64, error) {
	id := table.QuoteIdent(table.IDColumn)
	rows, err := tx.QueryContext(ctx, "SELECT "+id+" FROM "+b.cfg.SourceTable.Quoted()+" WHERE "+id+
		" BETWEEN ? AND ? ORDER BY "+id+" LOCK IN SHARE MODE", lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var spans [][2]uint64
	var k int64
	var last uint64
	for rows.Next() {
		if err := rows.Scan(&last); err != nil {
			return nil, err
		}
		if k%b.bulkRows == 0 {
			spans = append(spans, [2]uint64{last, last})
		}
		spans[len(spans)-1][1] = last
		k++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(spans) > 0 { // the spans cover the chunk without gaps
		spans[0][0] = lo
		for i := 1; i < len(spans); i++ {
			spans[i][0] = spans[i-1][1] + 1
		}
		spans[len(spans)-1][1] = hi
	}
	return spans, nil
}

// oneBulk runs a statement that holds CSMHE's AUTO-INC lock to its end (tableLock) one at a time across the
// workers. The server runs such statements one at a time anyway; queued in the server, the workers' statements
// would each stand before an app insert that arrives behind them, queued here only the one running does.
func (b *Backfill) oneBulk(tableLock bool, f func() error) error {
	if !tableLock {
		return f()
	}
	b.bulkMu.Lock()
	defer b.bulkMu.Unlock()
	return f()
}
