package dbconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrBinlogCompression means the source compresses its binlog transactions (MySQL 8.0.20+,
// binlog_transaction_compression=ON): each transaction reaches the binlog as one Transaction_payload event,
// zstd-compressed. go-mysql v1.13.0 (replication/transaction_payload_event.go) decompresses such an event
// whole and decodes every row of every table in it, with a parser of its own that has none of the stream's
// settings (rows of other tables are decoded too; TIMESTAMP values are formatted in the local time zone): the
// memory one event takes is the transaction's uncompressed size and all its decoded rows, with no bound the
// stream could set, and a bulk change of CSMH arrives as one such event. So csmh-sync refuses a source with
// the setting on: preflight fails, run and backfill refuse to start, and a running daemon stops when it is
// turned on.
var ErrBinlogCompression = errors.New("binlog_transaction_compression is ON on the source")

// CheckBinlogCompression returns ErrBinlogCompression's refusal, with the fix, when the source compresses its
// binlog, and nil when it does not or has no such setting (MariaDB, MySQL before 8.0.20).
func CheckBinlogCompression(ctx context.Context, db *sql.DB) error {
	vars, err := Variables(ctx, db, "binlog_transaction_compression")
	if err != nil {
		return err
	}
	return binlogCompression(vars["binlog_transaction_compression"])
}

// binlogCompression judges the variable's value as SHOW GLOBAL VARIABLES prints it ("ON", "OFF"; "" when the
// server has none).
func binlogCompression(v string) error {
	if !isOn(v) {
		return nil
	}
	return fmt.Errorf("%w (MySQL's Transaction_payload events): csmh-sync's binlog client decompresses each compressed transaction whole and decodes every row of every table in it, so one bulk change can take any amount of memory: run SET GLOBAL binlog_transaction_compression=OFF on the source and set binlog_transaction_compression=OFF in its my.cnf (on RDS, its parameter group); sessions that set it for themselves compress until they end",
		ErrBinlogCompression)
}
