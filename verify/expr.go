package verify

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/csmh-sync/csmh-sync/table"
)

// side is one table as verify reads it: the SQL fragments that turn its rows into a canonical form that is
// byte-identical on both sides whenever the values are equal, whatever the column order, integer width,
// datetime precision or character set.
type side struct {
	role   string // "source" or "target"
	db     *sql.DB
	table  string // quoted name
	id     string // quoted id column
	hash   string // one short string per row: normalized small values, MD5 of long ones, NULL flags
	sum    string // the chunk checksum's aggregates, ending in FROM, for checksumSQL
	fields string // select list of the full normalized values and the NULL flags, for rows mode
}

// digest is how the chunk checksums hash a row. Both sides use the same one.
type digest int

const (
	// digestMD5 XORs the first 64 bits of each row's MD5: any server.
	digestMD5 digest = iota
	// digestCRC hashes each row with CRC-32 and CRC-32C (two polynomials, 64 bits) and aggregates their XOR
	// and the sums of their squares: MariaDB 10.8 and later, whose CRC32 and CRC32C continue a running value,
	// so long values are hashed where they are stored, without a row string holding them. About three times
	// cheaper than an MD5 of every row; why it detects at least as much: docs/design.md, "Verify".
	digestCRC
	// digestCRCTwice is digestCRC with the head printed for each CRC: a server whose derived table does not
	// evaluate its select list in order (orderSelfTest).
	digestCRCTwice
)

// columnPair is one compared column as each side defines it.
type columnPair struct{ src, dst table.Column }

// pairColumns matches the source columns to the target's by name, in name order so that both sides
// concatenate in the same order. Target-only columns are returned separately: they are not compared
// (copied rows leave them at their default).
func pairColumns(src, dst *table.Table) (pairs []columnPair, targetOnly []string, err error) {
	for _, sc := range src.Columns {
		dc := dst.Column(sc.Name)
		if dc == nil {
			return nil, nil, fmt.Errorf("%w: %s has no column %s that %s has", ErrSchema, dst.Name, sc.Name, src.Name)
		}
		pairs = append(pairs, columnPair{sc, *dc})
	}
	for _, dc := range dst.Columns {
		if src.Column(dc.Name) == nil {
			targetOnly = append(targetOnly, dc.Name)
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return strings.ToLower(pairs[i].src.Name) < strings.ToLower(pairs[j].src.Name) })
	return pairs, targetOnly, nil
}

// category groups column types by how their values are normalized.
type category int

const (
	catInteger category = iota
	catTemporal
	catDate
	catTime
	catNumber
	catText
	catBinary
	catOther
)

func categorize(c table.Column) category {
	switch c.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year", "bit":
		return catInteger
	case "datetime", "timestamp":
		return catTemporal
	case "date":
		return catDate
	case "time":
		return catTime
	case "float", "double", "decimal", "real":
		return catNumber
	case "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json":
		return catText
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return catBinary
	}
	return catOther
}

// isUTF8 reports whether the charset stores characters as UTF-8 bytes: utf8mb3 and utf8mb4 encode every
// character they share identically, so no conversion is needed to compare them byte for byte.
func isUTF8(charset string) bool {
	switch strings.ToLower(charset) {
	case "utf8", "utf8mb3", "utf8mb4":
		return true
	}
	return false
}

// normalize returns an expression for the column's value as text that is equal on both sides for equal
// values. NULL stays NULL: callers add NULL flags.
func normalize(c table.Column) string {
	q := table.QuoteIdent(c.Name)
	switch categorize(c) {
	case catInteger:
		return "CAST(" + q + " AS CHAR)"
	case catTemporal:
		// datetime and datetime(6) print alike: %f always has six digits.
		return "DATE_FORMAT(" + q + ", '%Y-%m-%d %H:%i:%s.%f')"
	case catDate:
		return "DATE_FORMAT(" + q + ", '%Y-%m-%d')"
	case catTime:
		return "TIME_FORMAT(" + q + ", '%H:%i:%s.%f')"
	case catNumber:
		// The server prints a double with the fewest digits that read back as the same double.
		return "CAST(" + q + " AS CHAR)"
	case catText:
		if isUTF8(c.Charset) {
			return q
		}
		return "CONVERT(" + q + " USING utf8mb4)"
	case catBinary:
		return q
	}
	return "CAST(" + q + " AS CHAR)"
}

// hashValue is the column's part of the per-row hash input. Strings and anything else that is long or may
// contain the separator enter as their MD5: the row string stays short (no max_allowed_packet overflow on
// huge values) and unambiguous (no separator inside a field).
func hashValue(c table.Column) string {
	n := normalize(c)
	switch categorize(c) {
	case catInteger, catTemporal, catDate, catTime, catNumber:
		return n
	}
	return "MD5(" + n + ")"
}

// nullFlags is a string of one 0/1 per column: it tells NULL from the empty string (and from any
// placeholder) in the concatenations.
func nullFlags(cols []table.Column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = "ISNULL(" + table.QuoteIdent(c.Name) + ")"
	}
	return "CONCAT(" + strings.Join(parts, ", ") + ")"
}

// hashExpr is the per-row string the checksums and the drill-down compare.
func hashExpr(cols []table.Column) string {
	parts := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		parts = append(parts, "IFNULL("+hashValue(c)+", '')")
	}
	parts = append(parts, nullFlags(cols))
	return "CONCAT_WS('#', " + strings.Join(parts, ", ") + ")"
}

// fieldList is the select list of full normalized values (rows mode), ending with the NULL flags.
func fieldList(cols []table.Column) string {
	parts := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		parts = append(parts, "IFNULL("+normalize(c)+", '')")
	}
	parts = append(parts, nullFlags(cols))
	return strings.Join(parts, ", ")
}

// crcPieces are the row's hash input in the CRC digest, in order: a head with every short value (numbers,
// dates, times) and every long value's byte length, NULL as N, joined and ended by '#'; then the long values
// (strings, binaries, anything else) themselves, a NULL as nothing. No head field contains '#' or is empty,
// so the head splits into its fields, and the lengths then split the rest: the concatenation reads back into
// the values, and two rows give the same input exactly when their values are equal. raw[i] says the column's
// value may enter as the server prints it (see rawComparable); otherwise it is normalized.
func crcPieces(cols []table.Column, raw []bool) (head string, long []string) {
	parts := make([]string, 0, len(cols)+1)
	for i, c := range cols {
		n := normalize(c)
		switch categorize(c) {
		case catInteger, catTemporal, catDate, catTime, catNumber:
			if raw[i] {
				n = table.QuoteIdent(c.Name)
			}
			if c.Nullable {
				n = "IFNULL(" + n + ", 'N')"
			}
			parts = append(parts, n)
		default:
			parts = append(parts, "IFNULL(LENGTH("+n+"), 'N')")
			long = append(long, "IFNULL("+n+", '')")
		}
	}
	parts = append(parts, "''")
	return "CONCAT_WS('#', " + strings.Join(parts, ", ") + ")", long
}

// rawComparable reports whether a short column's values may enter the CRC digest as the server prints them
// (converting them to text itself, which costs less than DATE_FORMAT or CAST): where that text is the same
// on both sides for equal values. Integers print their digits whatever their width or sign (not BIT or
// ZEROFILL), doubles and floats as CAST prints them, dates alike; datetimes, times and decimals only when both sides have the same
// precision or scale (a datetime prints no fraction, a datetime(6) six digits). Both servers are MariaDB in
// this digest.
func rawComparable(p columnPair) bool {
	a, b := p.src, p.dst
	switch categorize(a) {
	case catInteger, catDate:
		// BIT prints its bytes, ZEROFILL pads: neither prints as CAST does.
		return categorize(b) == categorize(a) && a.DataType != "bit" && b.DataType != "bit" &&
			!strings.Contains(a.ColumnType, "zerofill") && !strings.Contains(b.ColumnType, "zerofill")
	case catTemporal, catTime:
		return a.DataType == b.DataType && a.Precision == b.Precision
	case catNumber:
		if a.DataType == "decimal" || b.DataType == "decimal" {
			return a.ColumnType == b.ColumnType
		}
		return a.DataType == b.DataType
	}
	return false
}

// crcChain is fn (CRC32 or CRC32C) of the pieces' concatenation, each piece fed to the running value.
func crcChain(fn, head string, long []string) string {
	e := fn + "(" + head + ")"
	for _, l := range long {
		e = fn + "(" + e + ", " + l + ")"
	}
	return e
}

// sumExpr is the chunk checksum's select list and FROM, before the id range condition: COUNT, the XOR of
// the rows' 64-bit hashes and, in the CRC digest, the sums of the squares of each 32-bit half (the XOR of CRCs
// alone is linear: values swapped between two rows of equal-length encodings would cancel out in it). The
// CRC digest reads each row's two CRCs once, in a derived table (the LIMIT keeps it from being merged, which
// would compute each CRC once per aggregate), and prints the row's head once, for both (headVar).
func sumExpr(d digest, t, id string, cols []table.Column, raw []bool) string {
	if d == digestCRC || d == digestCRCTwice {
		head, long := crcPieces(cols, raw)
		first, second := headVar+" := "+head, headVar // the head printed by h1, read by h2
		if d == digestCRCTwice {
			first, second = head, head
		}
		h1, h2 := crcChain("CRC32", first, long), crcChain("CRC32C", second, long)
		return "SELECT COUNT(*), COALESCE(BIT_XOR(h1 << 32 | h2), 0), COALESCE(SUM(h1 * h1), 0), COALESCE(SUM(h2 * h2), 0) FROM (SELECT " +
			h1 + " AS h1, " + h2 + " AS h2 FROM " + t + " WHERE " + id +
			" BETWEEN ? AND ? LIMIT 18446744073709551615) AS d"
	}
	// Measured on 100k CSMH rows: COUNT alone 8 ms, BIT_XOR(CRC32(row)) 300 ms, this 385 ms, CRC32 and MD5
	// together 650 ms (the row expression is evaluated once per aggregate).
	return "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CONV(SUBSTRING(MD5(" + hashExpr(cols) + "), 1, 16), 16, 10) AS UNSIGNED)), 0), 0, 0 FROM " +
		t + " WHERE " + id + " BETWEEN ? AND ?"
}

// newSides builds both sides' SQL from the column pairs.
func newSides(src, dst *table.Table, srcDB, dstDB *sql.DB, pairs []columnPair, d digest) (*side, *side) {
	raw := make([]bool, len(pairs))
	for i, p := range pairs {
		raw[i] = rawComparable(p)
	}
	mk := func(role string, t *table.Table, db *sql.DB, pick func(columnPair) table.Column) *side {
		cols := make([]table.Column, len(pairs))
		for i, p := range pairs {
			cols[i] = pick(p)
		}
		q, id := t.Name.Quoted(), table.QuoteIdent(idName(t))
		return &side{role: role, db: db, table: q, id: id, hash: hashExpr(cols), sum: sumExpr(d, q, id, cols, raw), fields: fieldList(cols)}
	}
	return mk("source", src, srcDB, func(p columnPair) table.Column { return p.src }),
		mk("target", dst, dstDB, func(p columnPair) table.Column { return p.dst })
}

// headVar is the session variable that carries a row's CRC head from its CRC-32 to its CRC-32C: the head
// (the short values printed and joined) is most of a row's hashing cost, and a derived table's select list
// is evaluated in order, h1 before h2, for each row. digestOf checks that order on each server first.
const headVar = "@csmh_sync_head"

// crcSelfTest holds on a server that has CRC32C and whose CRC32 and CRC32C continue a running value
// (MariaDB 10.8+; elsewhere an error); orderSelfTest where, besides, a derived table's h2 reads the head its
// own row's h1 assigned (two rows, so a stale or NULL head shows).
const (
	crcSelfTest   = "SELECT CRC32C(CRC32C('ab'), 'cd') = CRC32C('abcd') AND CRC32(CRC32('ab'), 'cd') = CRC32('abcd')"
	orderSelfTest = "SELECT COUNT(h2) = 2 AND BIT_XOR(h1 << 32 | h2) = (CRC32('a#') << 32 | CRC32C('a#')) ^ (CRC32('b#') << 32 | CRC32C('b#')) FROM (" +
		"SELECT CRC32(" + headVar + " := CONCAT(x, '#')) AS h1, CRC32C(" + headVar + ") AS h2 FROM " +
		"(SELECT 'a' AS x UNION ALL SELECT 'b') AS t LIMIT 18446744073709551615) AS d"
)

// digestOf picks the cheapest digest both servers compute: the CRC digest, else the CRC digest with the head
// printed twice, else MD5.
func digestOf(ctx context.Context, dbs ...*sql.DB) digest {
	d := digestCRC
	for _, db := range dbs {
		if !holds(ctx, db, crcSelfTest) {
			return digestMD5
		}
		if !holds(ctx, db, orderSelfTest) {
			d = digestCRCTwice
		}
	}
	return d
}

func holds(ctx context.Context, db *sql.DB, q string) bool {
	var ok sql.NullBool
	return db.QueryRowContext(ctx, q).Scan(&ok) == nil && ok.Bool
}

// idName is the table's own spelling of the id column.
func idName(t *table.Table) string {
	if c := t.Column(table.IDColumn); c != nil {
		return c.Name
	}
	return table.IDColumn
}

// checksumSQL aggregates an id range: COUNT, the XOR of 64-bit row hashes, and two more sums (0 in the MD5
// digest); see sumExpr.
func (s *side) checksumSQL() string { return s.sum }

func (s *side) countSQL() string {
	return "SELECT COUNT(*) FROM " + s.table + " WHERE " + s.id + " BETWEEN ? AND ?"
}

// hashRowsSQL lists (id, row hash input) in id order; where is a condition on the id.
func (s *side) hashRowsSQL(where string) string {
	return "SELECT CAST(" + s.id + " AS UNSIGNED), " + s.hash + " FROM " + s.table + " WHERE " + where + " ORDER BY " + s.id
}

// fullRowsSQL lists (id, normalized values…, NULL flags) in id order.
func (s *side) fullRowsSQL(where string) string {
	return "SELECT CAST(" + s.id + " AS UNSIGNED), " + s.fields + " FROM " + s.table + " WHERE " + where + " ORDER BY " + s.id
}

// inList renders ids as a SQL list; ids are integers, so no quoting is needed.
func inList(ids []uint64) string {
	b := make([]byte, 0, len(ids)*11)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, id, 10)
	}
	return string(b)
}
