package dbconn

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// BinlogFile is one row of SHOW BINARY LOGS.
type BinlogFile struct {
	Name string
	Size uint64
}

// BinlogStatusStatement is the statement that shows the server's current binlog file and position:
// SHOW BINARY LOG STATUS from MySQL 8.2 (8.4 removed SHOW MASTER STATUS), SHOW MASTER STATUS on MariaDB and
// older MySQL. The one place this difference lives.
func BinlogStatusStatement(v Version) string {
	if v.Flavor == MySQL && v.AtLeast(8, 2) {
		return "SHOW BINARY LOG STATUS"
	}
	return "SHOW MASTER STATUS"
}

// CurrentBinlogPos returns the file and offset the server writes its next binlog event at: the end of the
// last transaction written (or the head of a file just rotated to). Needs REPLICATION CLIENT (MySQL) or
// BINLOG MONITOR (MariaDB 10.5+).
func CurrentBinlogPos(ctx context.Context, db *sql.DB) (string, uint64, error) {
	var version, comment string
	if err := db.QueryRowContext(ctx, "SELECT @@version, @@version_comment").Scan(&version, &comment); err != nil {
		return "", 0, fmt.Errorf("read server version: %w", err)
	}
	v, err := ParseVersion(version, comment)
	if err != nil {
		return "", 0, err
	}
	q := BinlogStatusStatement(v)
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return "", 0, fmt.Errorf("%s (needs REPLICATION CLIENT / BINLOG MONITOR): %w", q, err)
	}
	vals, err := firstRow(rows)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", q, err)
	}
	if vals == nil || len(vals) < 2 || vals[0].String == "" {
		return "", 0, fmt.Errorf("%s shows no binlog: is log_bin on?", q)
	}
	pos, err := strconv.ParseUint(vals[1].String, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("%s: position %q: %v", q, vals[1].String, err)
	}
	return vals[0].String, pos, nil
}

// BinaryLogs lists the server's binlog files, oldest first (SHOW BINARY LOGS: Log_name, File_size, and on
// newer servers Encrypted).
func BinaryLogs(ctx context.Context, db *sql.DB) ([]BinlogFile, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("list binary logs (needs BINLOG MONITOR / REPLICATION CLIENT): %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []BinlogFile
	for rows.Next() {
		vals, err := scanStrings(rows, len(cols))
		if err != nil {
			return nil, err
		}
		f := BinlogFile{Name: vals[0].String}
		if len(vals) > 1 {
			f.Size, _ = strconv.ParseUint(vals[1].String, 10, 64)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// firstRow reads the first row of rows as strings (nil when there is none) and closes rows.
func firstRow(rows *sql.Rows) ([]sql.NullString, error) {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals, err := scanStrings(rows, len(cols))
	if err != nil {
		return nil, err
	}
	return vals, nil
}
