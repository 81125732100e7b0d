package sqllit

import (
	"database/sql"
	"strings"
)

// Kind says how a column's text-protocol bytes become a literal.
type Kind int

// Kinds of column values.
const (
	String Kind = iota // quoted and escaped
	Number             // written as sent: the server's own text, which reads back as the same value
	Binary             // quoted with the _binary introducer: bytes, not characters
)

// KindOf classifies a column by its driver type name (sql.ColumnType.DatabaseTypeName).
func KindOf(dbType string) Kind {
	switch strings.ToUpper(dbType) {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "UNSIGNED TINYINT", "UNSIGNED SMALLINT",
		"UNSIGNED MEDIUMINT", "UNSIGNED INT", "UNSIGNED BIGINT", "DOUBLE", "FLOAT", "DECIMAL", "YEAR":
		return Number
	case "BINARY", "VARBINARY", "TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB", "BIT":
		return Binary
	}
	return String
}

// Kinds classifies every column of a result set.
func Kinds(types []*sql.ColumnType) []Kind {
	out := make([]Kind, len(types))
	for i, t := range types {
		out[i] = KindOf(t.DatabaseTypeName())
	}
	return out
}

// Row writes "(v1,v2,…)" for one scanned row. A nil RawBytes is NULL; an empty non-nil one is ”.
func Row(sb *strings.Builder, vals []sql.RawBytes, kinds []Kind) {
	sb.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch {
		case v == nil:
			sb.WriteString("NULL")
		case kinds[i] == Number:
			sb.Write(v)
		case kinds[i] == Binary:
			sb.WriteString("_binary")
			Quote(sb, v)
		default:
			Quote(sb, v)
		}
	}
	sb.WriteByte(')')
}

// MaxRowBytes bounds the bytes Row or TSVRow (and the comma between two rows) write for vals: every value's
// bytes twice (each may be escaped), its quotes and _binary, and a separator.
func MaxRowBytes(vals []sql.RawBytes) int {
	n := 3
	for _, v := range vals {
		n += 2*len(v) + 10
	}
	return n
}

// TSVRow writes one scanned row as a line of LOAD DATA's default format (fields separated by tabs, lines
// ended by a newline, backslash escapes): NULL is \N, and a backslash, tab, newline or NUL byte in a value is
// escaped, so any bytes read back unchanged.
func TSVRow(sb *strings.Builder, vals []sql.RawBytes) {
	for i, v := range vals {
		if i > 0 {
			sb.WriteByte('\t')
		}
		if v == nil {
			sb.WriteString(`\N`)
			continue
		}
		start := 0
		for j, c := range v {
			var esc string
			switch c {
			case '\\':
				esc = `\\`
			case '\t':
				esc = `\t`
			case '\n':
				esc = `\n`
			case 0:
				esc = `\0`
			default:
				continue
			}
			sb.Write(v[start:j])
			sb.WriteString(esc)
			start = j + 1
		}
		sb.Write(v[start:])
	}
	sb.WriteByte('\n')
}
