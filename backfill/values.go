package backfill

import (
	"database/sql"
	"strings"

	"github.com/csmh-sync/csmh-sync/internal/sqllit"
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
			sqllit.Quote(sb, v)
		}
	}
	sb.WriteByte(')')
}
