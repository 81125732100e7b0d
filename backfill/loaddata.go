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
// text or not text at all (the data is sent as utf8mb4; a value of another charset would be converted). It
// reports whether the target's innodb_autoinc_lock_mode is 2 (interleaved): below it, every LOAD DATA holds the
// table's AUTO-INC lock to its end even when the rows carry their ids, so parallel writers take turns.
func loadDataUsable(ctx context.Context, dst *sql.DB, src *table.Table) (interleaved bool, err error) {
	var on, mode int
	if err := dst.QueryRowContext(ctx, "SELECT @@local_infile, @@innodb_autoinc_lock_mode").Scan(&on, &mode); err != nil {
		return false, fmt.Errorf("backfill: read the target's local_infile and innodb_autoinc_lock_mode: %w", err)
	}
	if on == 0 {
		return false, fmt.Errorf("%w: the target refuses LOAD DATA LOCAL (local_infile=OFF): run SET GLOBAL local_infile=ON on the target, or use --write-method %s",
			ErrConfig, WriteInsert)
	}
	for _, c := range src.Columns {
		switch strings.ToLower(c.Charset) {
		case "", "binary", "utf8", "utf8mb3", "utf8mb4":
		default:
			return false, fmt.Errorf("%w: column %s is %s text, which --write-method %s would convert: use --write-method %s",
				ErrConfig, c.Name, c.Charset, WriteLoadData, WriteInsert)
		}
	}
	return mode == 2, nil
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
