package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/csmh-sync/csmh-sync/table"
)

// Tables in the target table's schema.
const (
	// LedgerTable holds one row per chunk verify has compared: its id range (the chunk map later runs
	// reuse, so boundaries stay stable), the mode, whether it was equal, and the touch count it had when it
	// was read.
	LedgerTable = "csmh_sync_verify_ledger"
	// TouchTable counts, per bucket of 1<<TouchBucketBits ids, the replication transactions that changed
	// rows there (MarkTouched).
	TouchTable = "csmh_sync_verify_touched"
	// TouchBucketBits sets the touch granularity: ids id>>TouchBucketBits share a bucket.
	TouchBucketBits = 10
)

// Tables lists verify's tables, for the grants they need (EnsureLedger creates each).
var Tables = []string{LedgerTable, TouchTable}

// Execer is what MarkTouched needs: the applier's *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// EnsureLedger creates the ledger and touch tables in schema if they do not exist. The replication
// applier's MarkTouched fails without them, so whoever wires MarkTouched calls this first.
func EnsureLedger(ctx context.Context, db *sql.DB, schema string) error {
	l := newLedger(db, schema)
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + l.tbl + ` (
  start_id bigint unsigned NOT NULL,
  end_id bigint unsigned NOT NULL,
  mode varchar(16) NOT NULL,
  equal tinyint NOT NULL,
  source_count bigint unsigned NOT NULL,
  target_count bigint unsigned NOT NULL,
  checksum varchar(16) NOT NULL DEFAULT '',
  scope varchar(512) NOT NULL COMMENT 'source>target@target creation time: entries of another table or an earlier incarnation of it vouch for nothing',
  touches bigint unsigned NOT NULL COMMENT 'sum of ` + TouchTable + `.touches over the chunk, read before the chunk was',
  verified_at datetime(6) NOT NULL,
  PRIMARY KEY (start_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync verify: compared chunks'`,
		`CREATE TABLE IF NOT EXISTS ` + l.touch + ` (
  bucket bigint unsigned NOT NULL COMMENT 'id >> ` + strconv.Itoa(TouchBucketBits) + `',
  touches bigint unsigned NOT NULL,
  touched_at datetime(6) NOT NULL,
  PRIMARY KEY (bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync verify: replicated changes per id bucket'`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%w: create in %s (needs CREATE there): %w", ErrLedger, schema, err)
		}
	}
	return nil
}

// MarkTouched records, inside the applier's transaction, that rows with these ids changed: it increments
// the touch counter of each id's bucket. A chunk is re-checked by an incremental run when the sum of its
// buckets' counters differs from the sum recorded when it was last read.
//
// Why counters in their own table instead of a dirty flag on the ledger row: verify reads a chunk's
// counter sum BEFORE reading the chunk, and the applier bumps the counter in the same transaction as the
// rows. A change committed before that read is in the data verify compares; one committed after it
// changes the sum. Nothing depends on the ledger row existing when the applier runs (a flag would be lost
// when verify wrote the row after an applier transaction that found none), and the applier never waits
// for verify. One statement per call; buckets are written in ascending order.
func MarkTouched(ctx context.Context, tx Execer, targetSchema string, ids []uint64) error {
	if len(ids) == 0 {
		return nil
	}
	buckets := make([]uint64, len(ids))
	for i, id := range ids {
		buckets[i] = id >> TouchBucketBits
	}
	slices.Sort(buckets)
	buckets = slices.Compact(buckets)
	var b strings.Builder
	b.Grow(len(buckets)*24 + 160)
	b.WriteString("INSERT INTO " + table.QuoteIdent(targetSchema) + "." + table.QuoteIdent(TouchTable) +
		" (bucket, touches, touched_at) VALUES ")
	for i, k := range buckets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		b.WriteString(strconv.FormatUint(k, 10))
		b.WriteString(",1,UTC_TIMESTAMP(6))")
	}
	b.WriteString(" ON DUPLICATE KEY UPDATE touches = touches + 1, touched_at = VALUES(touched_at)")
	if _, err := tx.ExecContext(ctx, b.String()); err != nil {
		return fmt.Errorf("mark verify chunks touched: %w", err)
	}
	return nil
}

// ledger reads and writes the ledger of one target schema.
type ledger struct {
	db    *sql.DB
	tbl   string
	touch string
}

func newLedger(db *sql.DB, schema string) *ledger {
	return &ledger{db: db, tbl: table.QuoteIdent(schema) + "." + table.QuoteIdent(LedgerTable),
		touch: table.QuoteIdent(schema) + "." + table.QuoteIdent(TouchTable)}
}

// ledgerRow is one compared chunk.
type ledgerRow struct {
	start, end uint64
	mode       Mode
	equal      bool
	srcN, dstN int64
	checksum   string
	scope      string
	touches    uint64
}

// vouches reports whether the row proves the chunk equal for mode m: it was found equal by m or a stronger
// mode, in the same tables, and no replicated change has touched it since.
func (r *ledgerRow) vouches(m Mode, scope string, touches uint64) bool {
	return r != nil && r.equal && r.mode.strength() >= m.strength() && r.scope == scope && r.touches == touches
}

const ledgerCols = "start_id, end_id, mode, equal, source_count, target_count, checksum, scope, touches"

func scanLedger(sc interface{ Scan(...any) error }) (ledgerRow, error) {
	var r ledgerRow
	var mode string
	err := sc.Scan(&r.start, &r.end, &mode, &r.equal, &r.srcN, &r.dstN, &r.checksum, &r.scope, &r.touches)
	r.mode = Mode(mode)
	return r, err
}

// atOrBelow returns the ledger row with the greatest start at or below id, if any.
func (l *ledger) atOrBelow(ctx context.Context, id uint64) (*ledgerRow, error) {
	r, err := scanLedger(l.db.QueryRowContext(ctx, "SELECT "+ledgerCols+" FROM "+l.tbl+
		" WHERE start_id <= ? ORDER BY start_id DESC LIMIT 1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrLedger, err)
	}
	return &r, nil
}

// page returns up to limit rows starting in [from, to], in start order. Paging keeps no statement (and
// no read view) open across the run.
func (l *ledger) page(ctx context.Context, from, to uint64, limit int) ([]ledgerRow, error) {
	rows, err := l.db.QueryContext(ctx, "SELECT "+ledgerCols+" FROM "+l.tbl+
		" WHERE start_id BETWEEN ? AND ? ORDER BY start_id LIMIT "+strconv.Itoa(limit), from, to)
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrLedger, err)
	}
	defer rows.Close()
	var out []ledgerRow
	for rows.Next() {
		r, err := scanLedger(rows)
		if err != nil {
			return nil, fmt.Errorf("%w: read: %w", ErrLedger, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrLedger, err)
	}
	return out, nil
}

// touchSum is the chunk's current touch count: the sum over the buckets its ids fall in.
func (l *ledger) touchSum(ctx context.Context, lo, hi uint64) (uint64, error) {
	var n uint64
	err := l.db.QueryRowContext(ctx, "SELECT CAST(COALESCE(SUM(touches), 0) AS UNSIGNED) FROM "+l.touch+
		" WHERE bucket BETWEEN ? AND ?", lo>>TouchBucketBits, hi>>TouchBucketBits).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("%w: read touches: %w", ErrLedger, err)
	}
	return n, nil
}

// save records a compared chunk.
func (l *ledger) save(ctx context.Context, r ledgerRow) error {
	eq := 0
	if r.equal {
		eq = 1
	}
	_, err := l.db.ExecContext(ctx, "REPLACE INTO "+l.tbl+" ("+ledgerCols+", verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
		r.start, r.end, string(r.mode), eq, r.srcN, r.dstN, r.checksum, r.scope, r.touches)
	if err != nil {
		return fmt.Errorf("%w: write chunk %d..%d: %w", ErrLedger, r.start, r.end, err)
	}
	return nil
}

// scopeOf identifies the compared tables for the ledger. The target's creation time changes when it is
// dropped and created again (a migration started over) or rebuilt by ALTER TABLE, so entries recorded
// before then are not trusted; so does the touch table's, whose counters the entries' touch sums refer to
// (a touch table created again starts from zero, and a sum could climb back to a recorded one). plan, when
// set, names the migration plan (Config.Plan): entries recorded under another one vouch for nothing.
func scopeOf(ctx context.Context, db *sql.DB, src, dst table.Name, plan string) (string, error) {
	conn, err := table.LiveStatsConn(ctx, db)
	if err != nil {
		return "", fmt.Errorf("%w: read the creation time of %s: %w", ErrLedger, dst, err)
	}
	defer conn.Close()
	created := func(schema, name string) (string, error) {
		var t sql.NullString
		err := conn.QueryRowContext(ctx, `SELECT DATE_FORMAT(CREATE_TIME, '%Y-%m-%d %H:%i:%s') FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, schema, name).Scan(&t)
		if err != nil {
			return "", fmt.Errorf("%w: read the creation time of %s.%s: %w", ErrLedger, schema, name, err)
		}
		return t.String, nil
	}
	dstAt, err := created(dst.Schema, dst.Table)
	if err != nil {
		return "", err
	}
	touchAt, err := created(dst.Schema, TouchTable)
	if err != nil {
		return "", err
	}
	scope := src.String() + ">" + dst.String() + "@" + dstAt + " touches@" + touchAt
	if plan != "" {
		scope += " plan " + plan
	}
	return scope, nil
}

// drop deletes a row whose range no longer fits the chunk map.
func (l *ledger) drop(ctx context.Context, start uint64) error {
	if _, err := l.db.ExecContext(ctx, "DELETE FROM "+l.tbl+" WHERE start_id = ?", start); err != nil {
		return fmt.Errorf("%w: delete chunk at %d: %w", ErrLedger, start, err)
	}
	return nil
}

// ForgetProofs marks every chunk of the ledger in schema as not proven equal, keeping the chunk map: the next
// verify, and cutover's, compares each chunk again. For when changes may have reached the source table
// without the stream seeing them (an incident the stream was told to pass).
func ForgetProofs(ctx context.Context, db *sql.DB, schema string) error {
	if _, err := db.ExecContext(ctx, "UPDATE "+newLedger(db, schema).tbl+" SET equal = 0 WHERE equal <> 0"); err != nil {
		return fmt.Errorf("%w: forget the proofs: %w", ErrLedger, err)
	}
	return nil
}
