// Package table reads table metadata from information_schema and decides whether rows of the source table
// fit the target table without loss. Columns are always matched by name: the real edX tables order them
// differently (in CSMHE `id` is the sixth column).
package table

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// Name is a schema-qualified table name.
type Name struct{ Schema, Table string }

// ParseName reads "db.table". Both parts are required: csmh-sync never relies on a default database.
func ParseName(s string) (Name, error) {
	s = strings.ReplaceAll(strings.TrimSpace(s), "`", "")
	db, tbl, ok := strings.Cut(s, ".")
	if !ok || db == "" || tbl == "" || strings.Contains(tbl, ".") {
		return Name{}, fmt.Errorf("table name %q: use the form database.table", s)
	}
	return Name{Schema: db, Table: tbl}, nil
}

func (n Name) String() string { return n.Schema + "." + n.Table }

// Quoted returns `db`.`table` for SQL text.
func (n Name) Quoted() string { return QuoteIdent(n.Schema) + "." + QuoteIdent(n.Table) }

// QuoteIdent quotes one identifier.
func QuoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// Column is one column as information_schema describes it.
type Column struct {
	Name       string
	DataType   string // lower case: int, bigint, varchar, datetime, longtext, double, ...
	ColumnType string // full type: "bigint(20) unsigned"
	Nullable   bool
	Unsigned   bool
	MaxChars   int64 // CHARACTER_MAXIMUM_LENGTH for string types
	Precision  int64 // DATETIME_PRECISION for temporal types
	Charset    string
	AutoIncr   bool
	HasDefault bool
}

// Table is the metadata csmh-sync uses.
type Table struct {
	Name          Name
	Columns       []Column // in the table's own order
	PrimaryKey    []string
	UniqueKeys    map[string][]string // other unique keys, by index name
	AutoIncrement uint64              // next value; 0 if unknown
	Engine        string
}

// ErrNotFound means the table does not exist (or the user cannot see it).
var ErrNotFound = errors.New("table not found")

// Status reads the table's engine and its next AUTO_INCREMENT value (0 if unknown) as they are now. MySQL 8
// caches information_schema.TABLES figures for up to a day (information_schema_stats_expiry, 86400 s by
// default), which would make a stale AUTO_INCREMENT look like a wide id runway: the read runs on its own
// connection with the cache turned off for the session. MariaDB and MySQL 5.7 have no such cache (nor the
// variable) and read live values anyway.
func Status(ctx context.Context, db *sql.DB, n Name) (engine string, autoIncrement uint64, err error) {
	conn, err := LiveStatsConn(ctx, db)
	if err != nil {
		return "", 0, fmt.Errorf("read %s metadata: %w", n, err)
	}
	defer conn.Close()
	var ai sql.NullInt64
	var eng sql.NullString
	err = conn.QueryRowContext(ctx, `SELECT ENGINE, AUTO_INCREMENT FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, n.Schema, n.Table).Scan(&eng, &ai)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, fmt.Errorf("%w: %s does not exist or the user has no privilege on it", ErrNotFound, n)
	}
	if err != nil {
		return "", 0, fmt.Errorf("read %s metadata: %w", n, err)
	}
	if ai.Valid && ai.Int64 > 0 {
		autoIncrement = uint64(ai.Int64)
	}
	return eng.String, autoIncrement, nil
}

// LiveStatsConn returns a connection whose reads of information_schema.TABLES (AUTO_INCREMENT, CREATE_TIME)
// are live on MySQL 8 too (see Status). The caller closes it.
func LiveStatsConn(ctx context.Context, db *sql.DB) (*sql.Conn, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	// 1193, unknown system variable: MariaDB and MySQL 5.7, which have no such cache.
	if _, err := conn.ExecContext(ctx, "SET SESSION information_schema_stats_expiry = 0"); err != nil && !dbconn.ServerError(err, 1193) {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Load reads the table's metadata.
func Load(ctx context.Context, db *sql.DB, n Name) (*Table, error) {
	t := &Table{Name: n, UniqueKeys: map[string][]string{}}
	engine, ai, err := Status(ctx, db, n)
	if err != nil {
		return nil, err
	}
	t.Engine, t.AutoIncrement = engine, ai
	rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), IS_NULLABLE,
		CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION, CHARACTER_SET_NAME, EXTRA, COLUMN_DEFAULT IS NOT NULL
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
		n.Schema, n.Table)
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w", n, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c Column
		var nullable, extra string
		var maxChars, prec sql.NullInt64
		var charset sql.NullString
		if err := rows.Scan(&c.Name, &c.DataType, &c.ColumnType, &nullable, &maxChars, &prec, &charset, &extra, &c.HasDefault); err != nil {
			return nil, err
		}
		c.Nullable = nullable == "YES"
		c.Unsigned = strings.Contains(c.ColumnType, "unsigned")
		c.MaxChars = maxChars.Int64
		c.Precision = prec.Int64
		c.Charset = charset.String
		c.AutoIncr = strings.Contains(strings.ToLower(extra), "auto_increment")
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	krows, err := db.QueryContext(ctx, `SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX`, n.Schema, n.Table)
	if err != nil {
		return nil, fmt.Errorf("read %s indexes: %w", n, err)
	}
	defer krows.Close()
	for krows.Next() {
		var idx, col string
		if err := krows.Scan(&idx, &col); err != nil {
			return nil, err
		}
		if idx == "PRIMARY" {
			t.PrimaryKey = append(t.PrimaryKey, col)
		} else {
			t.UniqueKeys[idx] = append(t.UniqueKeys[idx], col)
		}
	}
	return t, krows.Err()
}

// Column returns the column with the name (case-insensitive), or nil.
func (t *Table) Column(name string) *Column {
	for i := range t.Columns {
		if strings.EqualFold(t.Columns[i].Name, name) {
			return &t.Columns[i]
		}
	}
	return nil
}

// ColumnNames returns the names in table order.
func (t *Table) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

// IDColumn is the single-column integer primary key csmh-sync chunks and applies by.
const IDColumn = "id"

// CheckKey verifies the table is keyed by a single integer `id`, which backfill ranges and upserts rely on.
func (t *Table) CheckKey() error {
	if len(t.PrimaryKey) != 1 || !strings.EqualFold(t.PrimaryKey[0], IDColumn) {
		return fmt.Errorf("%s: primary key is %v, want (id): csmh-sync copies by the integer id", t.Name, t.PrimaryKey)
	}
	if c := t.Column(IDColumn); c == nil || intRank[c.DataType] == 0 {
		return fmt.Errorf("%s: id is not an integer column", t.Name)
	}
	return nil
}
