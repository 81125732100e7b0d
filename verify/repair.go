package verify

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/clock"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
	"github.com/csmh-sync/csmh-sync/table"
)

const (
	// repairIDs bounds the ids one repair transaction covers.
	repairIDs = 500
	// repairStmtBytes bounds one INSERT of a repair transaction; a larger row gets a statement of its own.
	repairStmtBytes = 4 << 20
)

// repair makes the target rows with these ids equal to the source's current rows: ids the source has are
// re-copied whole, ids it does not have are deleted from the target.
//
// It is safe while replication runs for the reason the backfill is (docs/design.md): the source rows are
// read with a locking read (REPEATABLE READ, so absent ids are gap-locked too) whose transaction stays open
// until the target transaction has committed. A source change to one of these ids that commits after the
// read waits for that commit, so replication applies it after the repair; one committed before the read is
// in what the repair wrote, and replaying it is harmless because the applier writes whole rows by id.
func (r *run) repair(ctx context.Context, ids []uint64) error {
	for len(ids) > 0 {
		n := min(len(ids), repairIDs)
		batch := ids[:n]
		ids = ids[n:]
		if err := retry(ctx, r.v.log, func() error { return r.repairBatch(ctx, batch) }); err != nil {
			return fmt.Errorf("repair ids %d..%d: %w", batch[0], batch[len(batch)-1], err)
		}
	}
	return nil
}

func (r *run) repairBatch(ctx context.Context, ids []uint64) error {
	list := inList(ids)
	stx, err := r.src.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return err
	}
	defer stx.Rollback()
	cols := r.repairCols()
	// A prepared statement makes the server answer in the binary protocol: doubles arrive as exact float64
	// values, which the driver prints back losslessly.
	stmt, err := stx.PrepareContext(ctx, "SELECT "+cols+" FROM "+r.src.table+" WHERE "+r.src.id+" IN ("+list+") ORDER BY "+
		r.src.id+" LOCK IN SHARE MODE")
	if err != nil {
		return err
	}
	defer stmt.Close()
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		return err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	kinds := sqllit.Kinds(types)
	dtx, err := r.dst.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer dtx.Rollback()
	// Delete, then insert: covers missing, extra and different ids alike, and cannot update some other row
	// through a second unique key the way ON DUPLICATE KEY UPDATE could.
	if _, err := dtx.ExecContext(ctx, "DELETE FROM "+r.dst.table+" WHERE "+r.dst.id+" IN ("+list+")"); err != nil {
		return err
	}
	head := "INSERT INTO " + r.dst.table + " (" + cols + ") VALUES "
	var sb strings.Builder
	vals := make([]sql.RawBytes, len(types))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	flush := func() error {
		if sb.Len() == 0 {
			return nil
		}
		_, err := dtx.ExecContext(ctx, sb.String())
		sb.Reset()
		return err
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if sb.Len() == 0 {
			sb.WriteString(head)
		} else {
			sb.WriteByte(',')
		}
		sqllit.Row(&sb, vals, kinds)
		if sb.Len() >= repairStmtBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	if err := dtx.Commit(); err != nil {
		return err
	}
	// Only now may source changes to these ids proceed.
	return stx.Commit()
}

// repairCols is the source's column list; the target has every one (checked when the run started).
func (r *run) repairCols() string {
	t := r.srcCols
	q := make([]string, len(t))
	for i, c := range t {
		q[i] = table.QuoteIdent(c)
	}
	return strings.Join(q, ",")
}

// retry runs f until it succeeds, fails for good, or 10 transient failures (lock waits, deadlocks, lost
// connections) in a row have passed.
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
		log.Warn("transient error, retrying", "attempt", attempt, "err", err)
		if err := clock.Sleep(ctx, delay+time.Duration(rand.Int64N(int64(delay)))); err != nil {
			return err
		}
		delay = min(delay*2, 10*time.Second)
	}
}
