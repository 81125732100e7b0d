package verify

import (
	"context"
	"database/sql"
	"errors"
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
	// repairStmtBytes bounds one INSERT of a repair transaction (at most half the target's max_allowed_packet:
	// run.stmtBytes); a larger row gets a statement of its own.
	repairStmtBytes = 4 << 20
)

// repair makes the target rows with these ids equal to the source's current rows: ids the source has are
// re-copied whole, ids it does not have are deleted from the target.
//
// It is safe while replication runs for the reason the backfill is (docs/design.md): the source rows are
// read with a locking read (REPEATABLE READ, so absent ids are gap-locked too) whose transaction stays open
// until every repaired row is written, and so locked, in the target transaction, and ends just before that
// transaction commits. A source change to one of these ids that commits after the read waits for the source
// transaction; the stream's write of it then waits for the target transaction's row lock, so it lands after the
// repair. One committed before the read is in what the repair wrote, and replaying it is harmless because the
// applier writes whole rows by id.
//
// The app's changes to these source rows wait for the repair: each batch holds them for at most
// Config.RepairDeadline, target hung or not. A batch that reaches it is rolled back on both servers and
// repaired in halves; a single id is tried again.
func (r *run) repair(ctx context.Context, ids []uint64) error {
	for len(ids) > 0 {
		n := min(len(ids), repairIDs)
		batch := ids[:n]
		ids = ids[n:]
		if err := r.repairSpan(ctx, batch); err != nil {
			return fmt.Errorf("repair ids %d..%d: %w", batch[0], batch[len(batch)-1], err)
		}
	}
	return nil
}

// errRepairDeadline ends a repair batch that held its source rows for Config.RepairDeadline.
var errRepairDeadline = errors.New("repair reached its deadline")

// errRepairRaced: the stream inserted one of the batch's ids between the repair's DELETE and its INSERT (on a
// target whose transactions run at READ COMMITTED, deleting an id the target lacks locks nothing). The batch
// is done again, from a new read of the source.
var errRepairRaced = errors.New("the stream wrote a row of the repair batch meanwhile")

// repairDeadlines bounds how many times in a row one id's repair may reach the deadline before the run
// fails: the target is then too slow or held up for the repair to hold source rows that long.
const repairDeadlines = 10

// repairSpan repairs ids in one batch, or in halves when the batch reaches its deadline.
func (r *run) repairSpan(ctx context.Context, ids []uint64) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := retry(ctx, r.v.log, func() error { return r.repairBatch(ctx, ids) })
		if !errors.Is(err, errRepairDeadline) || ctx.Err() != nil {
			return err
		}
		if len(ids) > 1 {
			h := len(ids) / 2
			r.v.log.Warn("repair reached its deadline: its source rows are released and it is repaired in halves",
				"ids", len(ids), "first_id", ids[0], "deadline", r.v.cfg.RepairDeadline)
			if err := r.repairSpan(ctx, ids[:h]); err != nil {
				return err
			}
			return r.repairSpan(ctx, ids[h:])
		}
		if attempt >= repairDeadlines {
			return fmt.Errorf("id %d: the target did not finish the repair of one row within %s, %d times in a row (a slow or held-up target; raise --repair-deadline for a row too large to cross in time): %w",
				ids[0], r.v.cfg.RepairDeadline, attempt, err)
		}
		r.v.log.Warn("repair reached its deadline: its source row is released and it is tried again",
			"id", ids[0], "attempt", attempt, "deadline", r.v.cfg.RepairDeadline)
		if err := clock.Sleep(ctx, delay+time.Duration(rand.Int64N(int64(delay)))); err != nil {
			return err
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func (r *run) repairBatch(ctx context.Context, ids []uint64) error {
	dctx, cancel := context.WithTimeoutCause(ctx, r.v.cfg.RepairDeadline, errRepairDeadline)
	defer cancel()
	err := r.repairTx(dctx, ids)
	if dbconn.ServerError(err, 1062) {
		return fmt.Errorf("%w: %v", errRepairRaced, err)
	}
	if err != nil && ctx.Err() == nil && context.Cause(dctx) == errRepairDeadline {
		// The driver closed the connections; each server rolls its transaction back as it notices.
		return fmt.Errorf("%w (%s): %v", errRepairDeadline, r.v.cfg.RepairDeadline, err)
	}
	return err
}

// repairTx repairs ids in one source and one target transaction, both ended by ctx's deadline.
func (r *run) repairTx(ctx context.Context, ids []uint64) error {
	list := inList(ids)
	// The source session ends with ctx on the server too: a locking read cut off at the deadline while it
	// waits for a row the app holds would otherwise keep the rows it has locked until its lock wait ends.
	sess, err := dbconn.HoldSession(ctx, r.src.db)
	if err != nil {
		return err
	}
	defer sess.Close()
	stx, err := sess.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
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
	// The server's isolation: under REPEATABLE READ (the default) deleting an id the target lacks locks its gap,
	// so the stream's insert of that id waits for this commit; under READ COMMITTED it may come first, and the
	// INSERT below fails with a duplicate key (errRepairRaced: the batch is done again).
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
		if sb.Len() > 0 && sb.Len()+sqllit.MaxRowBytes(vals) > r.stmtBytes {
			// A large row after others starts a statement of its own, which no more than it can pass
			// max_allowed_packet.
			if err := flush(); err != nil {
				return err
			}
		}
		if sb.Len() == 0 {
			sb.WriteString(head)
		} else {
			sb.WriteByte(',')
		}
		sqllit.Row(&sb, vals, kinds)
		if sb.Len() >= r.stmtBytes {
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
	// Every repaired row is written and locked in the target transaction: the source rows may go now, before
	// the target commit. Both commits end at the batch's deadline too: a batch cut short there is tried again.
	if err := rows.Close(); err != nil {
		return err
	}
	if err := dbconn.Commit(ctx, stx); err != nil {
		return err
	}
	return dbconn.Commit(ctx, dtx)
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
// connections, a repair batch the stream raced) in a row have passed.
func retry(ctx context.Context, log *slog.Logger, f func() error) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || errors.Is(err, errRepairDeadline) || !(dbconn.IsTransient(err) || errors.Is(err, errRepairRaced)) || attempt >= 10 {
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
