package dbconn

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Flavor is the server family; it decides GTID syntax and a few variable names.
type Flavor string

// The flavors csmh-sync understands. The strings match go-mysql's flavor names.
const (
	MariaDB Flavor = "mariadb"
	MySQL   Flavor = "mysql"
)

// Version is a parsed server version.
type Version struct {
	Flavor              Flavor
	Major, Minor, Patch int
	Raw                 string
}

// AtLeast reports whether v ≥ major.minor.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

func (v Version) String() string {
	return fmt.Sprintf("%s %d.%d.%d", v.Flavor, v.Major, v.Minor, v.Patch)
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads @@version (and @@version_comment, which on some builds is the only place that says
// MariaDB). Examples: "10.11.19-MariaDB-0+deb12u1-log", "5.5.5-10.6.12-MariaDB" (the 5.5.5- prefix some
// proxies add), "8.0.35", "5.7.44-log", "8.0.mysql_aurora.3.04.0" (Aurora), "8.0.28-0ubuntu0.20.04.3".
func ParseVersion(version, comment string) (Version, error) {
	v := Version{Raw: version, Flavor: MySQL}
	s := version
	if strings.Contains(strings.ToLower(version+" "+comment), "mariadb") {
		v.Flavor = MariaDB
		s = strings.TrimPrefix(s, "5.5.5-")
	}
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		// Aurora MySQL reports "8.0.mysql_aurora.3.04.0": major.minor are still leading.
		parts := strings.SplitN(s, ".", 3)
		if len(parts) >= 2 {
			maj, err1 := strconv.Atoi(parts[0])
			min, err2 := strconv.Atoi(parts[1])
			if err1 == nil && err2 == nil {
				v.Major, v.Minor = maj, min
				return v, nil
			}
		}
		return v, fmt.Errorf("cannot parse server version %q", version)
	}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, nil
}

// ServerInfo is what csmh-sync needs to know about a server before it reads its binlog.
type ServerInfo struct {
	Version        Version
	ServerID       uint32
	ServerUUID     string // MySQL only
	LogBin         bool
	BinlogFormat   string
	BinlogRowImage string
	GTIDMode       string // MySQL: OFF/ON/...; MariaDB: always "ON" (GTIDs are always written)
	GTIDStrictMode bool   // MariaDB
	ReadOnly       bool
	// LowerCaseTableNames is @@lower_case_table_names: 0 compares database and table names exactly, 1 stores
	// them in lower case and compares them case-insensitively, 2 stores them as given and compares them in
	// lower case; -1 when the server did not say.
	LowerCaseTableNames int
}

// FoldsNames reports whether the server compares database and table names case-insensitively
// (lower_case_table_names 1 or 2), as a server that did not say is taken to: a name it folds, compared
// exactly, would miss the binlog's events of the table.
func (si ServerInfo) FoldsNames() bool { return si.LowerCaseTableNames != 0 }

// Inspect reads the server's identity and binlog settings.
func Inspect(ctx context.Context, db *sql.DB) (ServerInfo, error) {
	var si ServerInfo
	var version, comment string
	if err := db.QueryRowContext(ctx, "SELECT @@version, @@version_comment").Scan(&version, &comment); err != nil {
		return si, fmt.Errorf("read server version: %w", err)
	}
	v, err := ParseVersion(version, comment)
	if err != nil {
		return si, err
	}
	si.Version = v
	vars, err := Variables(ctx, db, "server_id", "log_bin", "binlog_format", "binlog_row_image", "read_only",
		"gtid_mode", "gtid_strict_mode", "server_uuid", "lower_case_table_names")
	if err != nil {
		return si, err
	}
	id, _ := strconv.ParseUint(vars["server_id"], 10, 32)
	si.ServerID = uint32(id)
	si.LogBin = isOn(vars["log_bin"])
	si.BinlogFormat = strings.ToUpper(vars["binlog_format"])
	si.BinlogRowImage = strings.ToUpper(vars["binlog_row_image"])
	si.ReadOnly = isOn(vars["read_only"])
	si.ServerUUID = vars["server_uuid"]
	si.LowerCaseTableNames = -1
	if n, err := strconv.Atoi(vars["lower_case_table_names"]); err == nil {
		si.LowerCaseTableNames = n
	}
	if v.Flavor == MariaDB {
		si.GTIDMode = "ON"
		si.GTIDStrictMode = isOn(vars["gtid_strict_mode"])
	} else {
		si.GTIDMode = strings.ToUpper(vars["gtid_mode"])
	}
	return si, nil
}

func isOn(s string) bool {
	switch strings.ToUpper(s) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// Variables reads global variables by name; missing ones are absent from the map.
func Variables(ctx context.Context, db *sql.DB, names ...string) (map[string]string, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "'" + n + "'"
	}
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ("+strings.Join(quoted, ",")+")")
	if err != nil {
		return nil, fmt.Errorf("read server variables: %w", err)
	}
	defer rows.Close()
	out := make(map[string]string, len(names))
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[strings.ToLower(k)] = v
	}
	return out, rows.Err()
}

// Status reads one global status counter (e.g. Threads_running).
func Status(ctx context.Context, db *sql.DB, name string) (int64, error) {
	var k string
	var v int64
	err := db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE '"+name+"'").Scan(&k, &v)
	if err != nil {
		return 0, fmt.Errorf("read status %s: %w", name, err)
	}
	return v, nil
}

// ExecutedGTID returns the set of transactions the server has written to its binlog:
// @@gtid_binlog_pos on MariaDB, @@gtid_executed on MySQL.
func ExecutedGTID(ctx context.Context, db *sql.DB, f Flavor) (string, error) {
	q := "SELECT @@GLOBAL.gtid_executed"
	if f == MariaDB {
		q = "SELECT @@GLOBAL.gtid_binlog_pos"
	}
	var s string
	if err := db.QueryRowContext(ctx, q).Scan(&s); err != nil {
		return "", fmt.Errorf("read executed GTIDs: %w", err)
	}
	return strings.Join(strings.Fields(s), ""), nil
}

// PurgedGTID returns the transactions no longer in the server's binlog. On MySQL that is @@gtid_purged.
// MariaDB has no such variable: the Gtid_list event at the head of the oldest binlog file lists, per
// domain, the last transaction written before that file, i.e. what a reader can no longer fetch.
func PurgedGTID(ctx context.Context, db *sql.DB, f Flavor) (string, error) {
	if f == MySQL {
		var s string
		if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_purged").Scan(&s); err != nil {
			return "", fmt.Errorf("read purged GTIDs: %w", err)
		}
		return strings.Join(strings.Fields(s), ""), nil
	}
	first, err := OldestBinlog(ctx, db)
	if err != nil {
		return "", err
	}
	rows, err := db.QueryContext(ctx, "SHOW BINLOG EVENTS IN '"+strings.ReplaceAll(first, "'", "")+"' LIMIT 4")
	if err != nil {
		return "", fmt.Errorf("read the oldest binlog's Gtid_list: %w", err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals, err := scanStrings(rows, len(cols))
		if err != nil {
			return "", err
		}
		// Columns: Log_name, Pos, Event_type, Server_id, End_log_pos, Info.
		if len(vals) >= 6 && vals[2].String == "Gtid_list" {
			return ParseGtidListInfo(vals[5].String), nil
		}
	}
	return "", rows.Err()
}

// ParseGtidListInfo turns SHOW BINLOG EVENTS' Info of a Gtid_list event, "[0-1-100,1-2-7]", into "0-1-100,1-2-7".
func ParseGtidListInfo(info string) string {
	s := strings.TrimSpace(info)
	s = strings.TrimPrefix(s, "[")
	s = strings.TrimSuffix(s, "]")
	return strings.Join(strings.Fields(s), "")
}

// OldestBinlog returns the name of the first file of SHOW BINARY LOGS.
func OldestBinlog(ctx context.Context, db *sql.DB) (string, error) {
	files, err := BinaryLogs(ctx, db)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("the server lists no binary logs: is log_bin on?")
	}
	return files[0].Name, nil
}

// RDSNotRetained is the retention BinlogRetention reports for Amazon RDS / Aurora MySQL with 'binlog retention
// hours' NULL (their default): RDS for MySQL then keeps no binlog beyond what it needs itself ("0 hours"), and
// Aurora cleans them up lazily, so a binlog reader may find its position gone within minutes.
const RDSNotRetained = 5 * 60

// BinlogRetention returns how long the server keeps binlogs (0 = until purged by hand). MariaDB ≥10.6 and MySQL 8
// use binlog_expire_logs_seconds, older servers expire_logs_days; on Amazon RDS and Aurora MySQL neither
// counts and 'binlog retention hours' decides (RDSNotRetained when it is NULL). rds reports the latter case.
func BinlogRetention(ctx context.Context, db *sql.DB) (seconds int64, rds bool, err error) {
	vars, err := Variables(ctx, db, "binlog_expire_logs_seconds", "expire_logs_days", "basedir")
	if err != nil {
		return 0, false, err
	}
	if strings.HasPrefix(vars["basedir"], "/rdsdbbin/") {
		secs, err := rdsRetention(ctx, db)
		return secs, true, err
	}
	if s, ok := vars["binlog_expire_logs_seconds"]; ok {
		if n, _ := strconv.ParseFloat(s, 64); n > 0 {
			return int64(n), false, nil
		}
	}
	if d, ok := vars["expire_logs_days"]; ok {
		if n, _ := strconv.ParseFloat(d, 64); n > 0 {
			return int64(n * 86400), false, nil
		}
	}
	return 0, false, nil
}

// rdsRetention reads 'binlog retention hours' with CALL mysql.rds_show_configuration.
func rdsRetention(ctx context.Context, db *sql.DB) (int64, error) {
	rows, err := db.QueryContext(ctx, "CALL mysql.rds_show_configuration")
	if err != nil {
		return 0, fmt.Errorf("read the RDS binlog retention (CALL mysql.rds_show_configuration): %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	var table [][]sql.NullString
	for rows.Next() {
		vals, err := scanStrings(rows, len(cols))
		if err != nil {
			return 0, err
		}
		table = append(table, vals)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	return ParseRDSConfiguration(cols, table)
}

// ParseRDSConfiguration finds 'binlog retention hours' in the rows of mysql.rds_show_configuration (columns
// name, value, description) and returns it in seconds, RDSNotRetained when it is NULL or missing.
func ParseRDSConfiguration(cols []string, rows [][]sql.NullString) (int64, error) {
	name, value := -1, -1
	for i, c := range cols {
		switch strings.ToLower(c) {
		case "name":
			name = i
		case "value":
			value = i
		}
	}
	if name < 0 || value < 0 {
		return 0, fmt.Errorf("mysql.rds_show_configuration returned columns %v, not name and value", cols)
	}
	for _, r := range rows {
		if !strings.EqualFold(strings.TrimSpace(r[name].String), "binlog retention hours") {
			continue
		}
		if !r[value].Valid || strings.EqualFold(r[value].String, "NULL") {
			return RDSNotRetained, nil
		}
		h, err := strconv.ParseFloat(strings.TrimSpace(r[value].String), 64)
		if err != nil || h <= 0 {
			return RDSNotRetained, nil
		}
		return int64(h * 3600), nil
	}
	return RDSNotRetained, nil
}

// ServerError reports whether err is a server error with one of the given numbers.
func ServerError(err error, numbers ...uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && slices.Contains(numbers, me.Number)
}

// IsTransient reports errors worth retrying after a pause: lock-wait timeouts and deadlocks (production won
// the lock), and lost connections (a server restart or failover). Anything else is definitive.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1205, 1213, 1927, 2006, 2013, 1053, 1317, 1040:
			return true
		}
		return false
	}
	msg := err.Error()
	return errors.Is(err, ErrCommitUnanswered) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "i/o timeout") || strings.Contains(msg, "EOF")
}

// scanStrings scans the current row of a statement with n columns of any type (SHOW … output) as strings.
func scanStrings(rows *sql.Rows, n int) ([]sql.NullString, error) {
	vals := make([]sql.NullString, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	return vals, rows.Scan(ptrs...)
}
