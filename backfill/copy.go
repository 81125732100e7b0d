package backfill

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
)

type chunkResult struct {
	rows, bytes int64
	took        time.Duration
}

// copySame copies a chunk with one server-side statement. LOCK IN SHARE MODE holds the source rows until the
// transaction, which also records the segment's progress, commits.
func (b *Backfill) copySame(ctx context.Context, seg checkpoint.Segment, lo, hi uint64) (chunkResult, error) {
	start := time.Now()
	tx, err := b.dst.BeginTx(ctx, nil)
	if err != nil {
		return chunkResult{}, err
	}
	defer tx.Rollback()
	cols := quoteCols(b.cols)
	res, err := tx.ExecContext(ctx, "INSERT IGNORE INTO "+b.cfg.TargetTable.Quoted()+" ("+cols+") SELECT "+cols+" FROM "+
		b.cfg.SourceTable.Quoted()+" WHERE id BETWEEN ? AND ? LOCK IN SHARE MODE", lo, hi)
	if err != nil {
		return chunkResult{}, err
	}
	n, _ := res.RowsAffected()
	seg.Rows += uint64(n)
	if err := b.store.SaveSegment(ctx, tx, seg); err != nil {
		return chunkResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return chunkResult{}, err
	}
	return chunkResult{rows: n, took: time.Since(start)}, nil
}

// stmtBudget bounds one INSERT statement; several make up a chunk, all in one target transaction.
func (b *Backfill) stmtBudget() int {
	return int(min(b.cfg.ChunkBytes/2, 4<<20))
}

// copyCross streams a chunk from the source into multi-row INSERT IGNORE statements on the target. The source
// read is a locking read whose transaction stays open until the target transaction (rows + progress) has
// committed: no source change to these rows can commit, and so reach the binlog, before the copy is durable.
func (b *Backfill) copyCross(ctx context.Context, seg checkpoint.Segment, lo, hi uint64) (chunkResult, error) {
	start := time.Now()
	stx, err := b.src.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return chunkResult{}, err
	}
	defer stx.Rollback()
	// A prepared statement makes the server answer in the binary protocol: doubles arrive as exact float64
	// values instead of decimal text, and the driver formats them back losslessly.
	stmt, err := stx.PrepareContext(ctx, "SELECT "+quoteCols(b.cols)+" FROM "+b.cfg.SourceTable.Quoted()+
		" WHERE id BETWEEN ? AND ? ORDER BY id LOCK IN SHARE MODE")
	if err != nil {
		return chunkResult{}, err
	}
	defer stmt.Close()
	rows, err := stmt.QueryContext(ctx, lo, hi)
	if err != nil {
		return chunkResult{}, err
	}
	defer rows.Close()
	dtx, err := b.dst.BeginTx(ctx, nil)
	if err != nil {
		return chunkResult{}, err
	}
	defer dtx.Rollback()
	types, err := rows.ColumnTypes()
	if err != nil {
		return chunkResult{}, err
	}
	kinds := make([]valueKind, len(types))
	for i, t := range types {
		kinds[i] = kindOf(t.DatabaseTypeName())
	}
	head := "INSERT IGNORE INTO " + b.cfg.TargetTable.Quoted() + " (" + quoteCols(b.cols) + ") VALUES "
	var sb strings.Builder
	budget := b.stmtBudget()
	vals := make([]sql.RawBytes, len(b.cols))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var res chunkResult
	inStmt := 0
	flush := func() error {
		if inStmt == 0 {
			return nil
		}
		_, err := dtx.ExecContext(ctx, sb.String())
		sb.Reset()
		inStmt = 0
		return err
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return res, err
		}
		if inStmt == 0 {
			sb.WriteString(head)
		} else {
			sb.WriteByte(',')
		}
		before := sb.Len()
		appendRow(&sb, vals, kinds)
		res.bytes += int64(sb.Len() - before)
		res.rows++
		inStmt++
		if sb.Len() >= budget {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	if err := flush(); err != nil {
		return res, err
	}
	seg.Rows += uint64(res.rows)
	if err := b.store.SaveSegment(ctx, dtx, seg); err != nil {
		return res, err
	}
	if err := dtx.Commit(); err != nil {
		return res, err
	}
	// Only now release the source rows.
	_ = stx.Commit()
	res.took = time.Since(start)
	return res, nil
}

// sameServer decides whether source and target tables live on one server, where a server-side copy is fastest.
func sameServer(ctx context.Context, src, dst *sql.DB) (bool, error) {
	ident := func(db *sql.DB) (string, error) {
		var id, host, port, dir string
		err := db.QueryRowContext(ctx, "SELECT @@server_id, @@hostname, @@port, @@datadir").Scan(&id, &host, &port, &dir)
		return id + "|" + host + "|" + port + "|" + dir, err
	}
	a, err := ident(src)
	if err != nil {
		return false, fmt.Errorf("backfill: identify source: %w", err)
	}
	c, err := ident(dst)
	if err != nil {
		return false, fmt.Errorf("backfill: identify target: %w", err)
	}
	return a == c, nil
}

// retry runs f until it succeeds, fails for good, or 10 transient failures in a row have passed.
func retry(ctx context.Context, log *slog.Logger, f func() error) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || !dbconn.IsTransient(err) || attempt >= 10 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		log.Warn("transient error, retrying chunk", "attempt", attempt, "err", err)
		t := time.NewTimer(delay + time.Duration(rand.Int64N(int64(delay))))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}
