package backfill

import (
	"database/sql"
	"strings"
)

type valueKind int

const (
	kindString valueKind = iota // quoted and escaped
	kindNumber                  // written as sent
)

func kindOf(dbType string) valueKind {
	switch strings.ToUpper(dbType) {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "UNSIGNED TINYINT", "UNSIGNED SMALLINT",
		"UNSIGNED MEDIUMINT", "UNSIGNED INT", "UNSIGNED BIGINT", "DOUBLE", "FLOAT", "DECIMAL", "YEAR":
		return kindNumber
	}
	return kindString
}

// appendRow writes "(v1,v2,…)". A nil RawBytes is NULL.
func appendRow(sb *strings.Builder, vals []sql.RawBytes, kinds []valueKind) {
	sb.WriteByte('(')
	for i, v := range vals {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch {
		case v == nil:
			sb.WriteString("NULL")
		case kinds[i] == kindNumber:
			sb.Write(v)
		default:
			appendQuoted(sb, v)
		}
	}
	sb.WriteByte(')')
}

// appendQuoted writes a string literal escaped for any sql_mode without NO_BACKSLASH_ESCAPES (csmh-sync pins
// its sessions' sql_mode). Bytes are copied as they are: no charset conversion, binary-safe.
func appendQuoted(sb *strings.Builder, v []byte) {
	sb.Grow(len(v) + 2)
	sb.WriteByte('\'')
	start := 0
	for i, c := range v {
		var esc string
		switch c {
		case 0:
			esc = `\0`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\\':
			esc = `\\`
		case '\'':
			esc = `\'`
		case 0x1a:
			esc = `\Z`
		default:
			continue
		}
		sb.Write(v[start:i])
		sb.WriteString(esc)
		start = i + 1
	}
	sb.Write(v[start:])
	sb.WriteByte('\'')
}
