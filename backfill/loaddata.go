package backfill

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/table"
)

// Write methods of the cross-server path.
const (
	WriteAuto     = "auto"
	WriteInsert   = "insert"
	WriteLoadData = "load-data"
)

// loadSeq names the in-memory readers LOAD DATA LOCAL reads from (the driver's registry is global).
var loadSeq atomic.Uint64

// loadDataUsable checks that the target accepts LOAD DATA LOCAL and that every column of the source is UTF-8
// text or not text at all (the data is sent as utf8mb4; a value of another charset would be converted).
func loadDataUsable(ctx context.Context, dst *sql.DB, src *table.Table) error {
	var on int
	if err := dst.QueryRowContext(ctx, "SELECT @@local_infile").Scan(&on); err != nil {
		return fmt.Errorf("backfill: read the target's local_infile: %w", err)
	}
	if on == 0 {
		return fmt.Errorf("%w: the target refuses LOAD DATA LOCAL (local_infile=OFF): run SET GLOBAL local_infile=ON on the target, or use --write-method %s",
			ErrConfig, WriteInsert)
	}
	for _, c := range src.Columns {
		switch strings.ToLower(c.Charset) {
		case "", "binary", "utf8", "utf8mb3", "utf8mb4":
		default:
			return fmt.Errorf("%w: column %s is %s text, which --write-method %s would convert: use --write-method %s",
				ErrConfig, c.Name, c.Charset, WriteLoadData, WriteInsert)
		}
	}
	return nil
}

// autoIncLockMode reads the target's innodb_autoinc_lock_mode. Below 2, a "bulk insert" (INSERT … SELECT,
// LOAD DATA) holds the table's AUTO-INC lock until the statement ends, explicit ids or not, and every insert
// of the app into the same table waits for it; at 0, every insert does.
func autoIncLockMode(ctx context.Context, dst *sql.DB) (int, error) {
	var mode int
	if err := dst.QueryRowContext(ctx, "SELECT @@innodb_autoinc_lock_mode").Scan(&mode); err != nil {
		return 0, fmt.Errorf("backfill: read the target's innodb_autoinc_lock_mode: %w", err)
	}
	return mode, nil
}

// execLoad writes one batch of TSV lines with LOAD DATA LOCAL … IGNORE, read by the server from memory.
func (b *Backfill) execLoad(ctx context.Context, tx *sql.Tx, s insertStmt, inserted *int64) error {
	name := "csmh-sync-" + strconv.FormatUint(loadSeq.Add(1), 10)
	mysql.RegisterReaderHandler(name, func() io.Reader { return strings.NewReader(s.sql) })
	defer mysql.DeregisterReaderHandler(name)
	res, err := tx.ExecContext(ctx, fmt.Sprintf(b.loadSQL, name))
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
