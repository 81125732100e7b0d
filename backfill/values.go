package backfill

import (
	"database/sql"
	"strings"

	"github.com/csmh-sync/csmh-sync/internal/sqllit"
)

// valueKind says how a column's values are written into statement text.
type valueKind int

const (
	kindString valueKind = iota // quoted and escaped, bytes unchanged (text, blobs, temporal types)
	kindNumber                  // written as sent
)

// kindOf maps a driver column type to how its values are written. Numbers are written as the driver formats
// them: integers and decimals as the server sent them, doubles and floats (binary protocol) in the shortest
// form that reads back as the same value.
func kindOf(dbType string) valueKind {
	switch strings.ToUpper(dbType) {
	case "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "UNSIGNED TINYINT", "UNSIGNED SMALLINT",
		"UNSIGNED MEDIUMINT", "UNSIGNED INT", "UNSIGNED BIGINT", "DOUBLE", "FLOAT", "DECIMAL", "YEAR":
		return kindNumber
	}
	return kindString
}

// appendRow writes "(v1,v2,…)". A nil RawBytes is NULL; an empty non-nil one is the empty string.
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
			sqllit.Quote(sb, v)
		}
	}
	sb.WriteByte(')')
}
