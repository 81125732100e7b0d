package replication

import (
	"regexp"
	"strings"

	"github.com/csmh-sync/csmh-sync/table"
)

var (
	commentRE = regexp.MustCompile(`(?s)/\*.*?\*/|--[^\n]*|#[^\n]*`)
	ddlRE     = regexp.MustCompile(`(?i)^\s*(ALTER|RENAME|DROP|TRUNCATE|CREATE|OPTIMIZE|REPAIR)\b`)
)

// touchesTable reports whether a statement from a Query event is DDL naming the table, either qualified
// (db.t, `db`.`t`) or bare while the event's current schema is the table's schema.
func touchesTable(query, currentSchema string, n table.Name) bool {
	q := commentRE.ReplaceAllString(query, " ")
	if !ddlRE.MatchString(q) {
		return false
	}
	norm := strings.ToLower(strings.ReplaceAll(q, "`", ""))
	tbl := strings.ToLower(n.Table)
	qualified := strings.ToLower(n.Schema) + "." + tbl
	for _, tok := range regexp.MustCompile(`[^a-z0-9_$.]+`).Split(norm, -1) {
		if tok == qualified {
			return true
		}
		if tok == tbl && strings.EqualFold(currentSchema, n.Schema) {
			return true
		}
	}
	// DROP DATABASE of the table's schema removes it too.
	return regexp.MustCompile(`^\s*drop\s+(database|schema)\s+(if\s+exists\s+)?` + regexp.QuoteMeta(strings.ToLower(n.Schema)) + `\b`).MatchString(norm)
}
