package backfill

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// checkWarnings fails a chunk whose INSERT IGNORE turned anything but a duplicate primary key into a warning:
// IGNORE skips rows the stream already wrote, but it also downgrades data errors (out of range, truncation,
// a CHECK violation, a collision on another unique key) that strict mode would reject. Notes (such as
// fractional seconds rounded into an older datetime column) are conversions the schema check accepted.
func (b *Backfill) checkWarnings(ctx context.Context, tx *sql.Tx) error {
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&n); err != nil {
		return fmt.Errorf("read warnings: %w", err)
	}
	if n == 0 {
		return nil
	}
	// Counting is not enough: a row skipped for a CHECK violation also lowers the affected rows.
	rows, err := tx.QueryContext(ctx, "SHOW WARNINGS")
	if err != nil {
		return fmt.Errorf("read warnings: %w", err)
	}
	defer rows.Close()
	listed := int64(0)
	for rows.Next() {
		listed++
		var level, msg string
		var code int
		if err := rows.Scan(&level, &code, &msg); err != nil {
			return fmt.Errorf("read warnings: %w", err)
		}
		if acceptableWarning(level, code, msg, b.otherUnique) {
			continue
		}
		return fmt.Errorf("%w: the target turned a copied value into %s %d (%s); nothing of this chunk was committed: fix the target table",
			ErrSchema, strings.ToLower(level), code, msg)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read warnings: %w", err)
	}
	if listed < n {
		// A chunk holds at most maxWarnings rows, one duplicate warning each: more means other warnings.
		return fmt.Errorf("%w: the target raised %d warnings for %d rows, more than duplicates explain; nothing of this chunk was committed",
			ErrSchema, n, listed)
	}
	return nil
}

// maxWarnings is the session's max_error_count while writing a chunk: the largest the server allows. Chunks
// hold at most this many rows (maxRowCap), so every duplicate-key warning of a statement can be listed.
const maxWarnings = 65535

// beginTarget starts a target transaction whose session lists every warning of a chunk.
func (b *Backfill) beginTarget(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	return b.beginTargetOn(ctx, b.dst, opts)
}

// beginTargetOn is beginTarget on a connection of the caller's (a *sql.DB or a held session).
func (b *Backfill) beginTargetOn(ctx context.Context, db interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, opts *sql.TxOptions) (*sql.Tx, error) {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, "SET SESSION max_error_count = "+strconv.Itoa(maxWarnings)); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// acceptableWarning is true for a duplicate primary key (the row is already there) and for notes.
func acceptableWarning(level string, code int, msg string, otherUnique bool) bool {
	if strings.EqualFold(level, "Note") {
		return true
	}
	// MariaDB says "for key 'PRIMARY'", MySQL 8 "for key 'tbl.PRIMARY'".
	return code == 1062 && (!otherUnique || strings.HasSuffix(msg, "PRIMARY'"))
}
