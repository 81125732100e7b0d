package backfill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

const (
	// rangeAttempts bounds how often a first start's range capture waits out the session's lock wait timeout
	// (5 s) on the row at an end of the table before it gives up: about a minute.
	rangeAttempts = 12
	rangePause    = time.Second
)

// rangeEnds returns the source table's lowest and highest id for a first start's plan (invalid when the
// table is empty). It runs after the stream's start position was captured, and must see every row a
// transaction inside that position wrote: those rows are the backfill's, as the stream starts after them.
// A plain MIN/MAX misses one: a transaction is in the binlog, and so in the position, before its rows are
// visible (the engine commits after the binlog write; a semi-synchronous primary waits for its replica's
// acknowledgement in between). So each end is read with a locking read of the index's last (first) row,
// which waits for the transaction holding it, and a transaction inside the position always commits. Each read
// runs alone in a READ COMMITTED transaction: it locks that one row and no gap, so the app's inserts at the
// table's end never wait for it, and it ends at once. A wait lasts at most the session's lock wait timeout;
// a row held longer (an app transaction left open) is waited for again, up to rangeAttempts times.
func rangeEnds(ctx context.Context, db *sql.DB, t table.Name, log *slog.Logger) (lo, hi sql.NullInt64, err error) {
	for attempt := 1; ; attempt++ {
		if hi, err = lockedEnd(ctx, db, t, "DESC"); err == nil {
			if lo, err = lockedEnd(ctx, db, t, "ASC"); err == nil {
				return lo, hi, nil
			}
		}
		if !dbconn.ServerError(err, 1205, 1213) || attempt == rangeAttempts {
			break
		}
		log.Info("capturing the id range: a row at an end of the source table is locked by an open transaction; waiting for it", "attempt", attempt)
		select {
		case <-time.After(rangePause):
		case <-ctx.Done():
			return lo, hi, ctx.Err()
		}
	}
	if dbconn.ServerError(err, 1205) {
		return lo, hi, fmt.Errorf("backfill: capture the id range: the first or last row of %s stayed locked by another transaction for over a minute: end that transaction (information_schema.INNODB_TRX), then start again: %w", t, err)
	}
	return lo, hi, fmt.Errorf("backfill: capture the id range: %w", err)
}

// lockedEnd reads the first id of t in order ("ASC" or "DESC") with a shared lock, in a transaction of its
// own.
func lockedEnd(ctx context.Context, db *sql.DB, t table.Name, order string) (sql.NullInt64, error) {
	var id sql.NullInt64
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return id, err
	}
	defer tx.Rollback()
	col := table.QuoteIdent(table.IDColumn)
	err = tx.QueryRowContext(ctx, "SELECT "+col+" FROM "+t.Quoted()+" ORDER BY "+col+" "+order+" LIMIT 1 LOCK IN SHARE MODE").Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return id, err
	}
	return id, dbconn.Commit(ctx, tx)
}
