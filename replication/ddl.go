package replication

import (
	"strings"

	"github.com/csmh-sync/csmh-sync/table"
)

// A binlog Query event carries SQL text. Two questions are asked of it: is it DDL that changes the source
// table (the stream must stop: the row format it decodes is about to change), and is it a statement-format
// write to the source table (its rows would be invisible to a row-based reader). Both are answered from a
// small tokenizer rather than regular expressions over the raw text, so comments, string literals and
// backquoted names cannot fool the match.

// token is one lexical unit: an identifier or keyword (text, unquoted), or a single punctuation character.
type token struct {
	text   string
	quoted bool // was `backquoted`: never a keyword
}

func (t token) is(kw string) bool { return !t.quoted && strings.EqualFold(t.text, kw) }

// tokenize splits SQL into identifiers/keywords and punctuation, dropping comments, string literals and
// whitespace. MariaDB's executable comments (/*! … */ and /*M! … */) keep their content, as the server does.
func tokenize(q string) []token {
	var out []token
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(q[i:], "/*!") || strings.HasPrefix(q[i:], "/*M!"):
			i += strings.IndexByte(q[i:], '!') + 1
			for i < len(q) && q[i] >= '0' && q[i] <= '9' { // optional version number
				i++
			}
		case strings.HasPrefix(q[i:], "/*"):
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 4
		case strings.HasPrefix(q[i:], "*/"): // end of an executable comment
			i += 2
		case c == '#' || (strings.HasPrefix(q[i:], "--") && (i+2 == len(q) || q[i+2] == ' ' || q[i+2] == '\t' || q[i+2] == '\n')):
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				return out
			}
			i += end + 1
		case c == '\'' || c == '"':
			i = skipString(q, i)
		case c == '`':
			var sb strings.Builder
			j := i + 1
			for j < len(q) {
				if q[j] == '`' {
					if j+1 < len(q) && q[j+1] == '`' {
						sb.WriteByte('`')
						j += 2
						continue
					}
					break
				}
				sb.WriteByte(q[j])
				j++
			}
			out = append(out, token{text: sb.String(), quoted: true})
			i = j + 1
		case isIdentByte(c):
			j := i
			for j < len(q) && isIdentByte(q[j]) {
				j++
			}
			out = append(out, token{text: q[i:j]})
			i = j
		default:
			out = append(out, token{text: q[i : i+1]})
			i++
		}
	}
	return out
}

func skipString(q string, i int) int {
	quote := q[i]
	j := i + 1
	for j < len(q) {
		switch q[j] {
		case '\\':
			j += 2
			continue
		case quote:
			if j+1 < len(q) && q[j+1] == quote {
				j += 2
				continue
			}
			return j + 1
		}
		j++
	}
	return j
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// parser walks a token list.
type parser struct {
	toks []token
	i    int
}

func (p *parser) peek() token {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return token{}
}

// accept consumes the next token if it is one of the keywords.
func (p *parser) accept(kws ...string) bool {
	for _, kw := range kws {
		if p.peek().is(kw) {
			p.i++
			return true
		}
	}
	return false
}

// name reads [schema.]table; the schema defaults to the event's current one.
func (p *parser) name(current string) (table.Name, bool) {
	if p.i >= len(p.toks) || (!p.toks[p.i].quoted && !isIdentByte(p.toks[p.i].text[0])) {
		return table.Name{}, false
	}
	first := p.toks[p.i].text
	p.i++
	if p.i+1 < len(p.toks) && p.toks[p.i].text == "." && !p.toks[p.i].quoted {
		second := p.toks[p.i+1].text
		p.i += 2
		return table.Name{Schema: first, Table: second}, true
	}
	return table.Name{Schema: current, Table: first}, true
}

// names reads a comma-separated list of names.
func (p *parser) names(current string) []table.Name {
	var out []table.Name
	for {
		n, ok := p.name(current)
		if !ok {
			return out
		}
		out = append(out, n)
		if p.peek().text != "," || p.peek().quoted {
			return out
		}
		p.i++
	}
}

// sameTable compares names as the source server does: with fold (lower_case_table_names 1 or 2)
// case-insensitively, else exactly, as two names that differ in case are two tables there.
func sameTable(a, b table.Name, fold bool) bool {
	return sameName(a.Schema, b.Schema, fold) && sameName(a.Table, b.Table, fold)
}

// sameName compares one database or table name.
func sameName(a, b string, fold bool) bool {
	if fold {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// ddlTouches reports whether query, run with currentSchema as the default database, is DDL that changes or
// removes the table n (names compared as sameTable does): ALTER/DROP/TRUNCATE/RENAME/CREATE [OR REPLACE] TABLE,
// an ALTER TABLE of another table whose clause names it (alterOthers),
// CREATE/DROP INDEX … ON it, or
// DROP DATABASE of its schema. Maintenance statements (OPTIMIZE, ANALYZE) and temporary tables do not count.
func ddlTouches(query, currentSchema string, n table.Name, fold bool) bool {
	p := &parser{toks: tokenize(query)}
	var targets []table.Name
	switch {
	case p.accept("ALTER"):
		p.accept("ONLINE", "OFFLINE")
		p.accept("IGNORE")
		if !p.accept("TABLE") {
			return false
		}
		p.accept("IF")
		p.accept("EXISTS")
		targets = append(p.names(currentSchema), alterOthers(p, currentSchema)...)
	case p.accept("RENAME"):
		if !p.accept("TABLE", "TABLES") {
			return false
		}
		for {
			p.accept("IF")
			p.accept("EXISTS")
			from, ok := p.name(currentSchema)
			if !ok {
				break
			}
			targets = append(targets, from)
			p.accept("WAIT", "NOWAIT") // MariaDB: RENAME TABLE t WAIT n TO …
			if p.peek().text != "" && !p.peek().is("TO") {
				p.i++ // the WAIT timeout
			}
			if !p.accept("TO") {
				break
			}
			if to, ok := p.name(currentSchema); ok {
				targets = append(targets, to)
			}
			if p.peek().text != "," {
				break
			}
			p.i++
		}
	case p.accept("DROP"):
		if p.accept("DATABASE", "SCHEMA") {
			p.accept("IF")
			p.accept("EXISTS")
			db := p.peek()
			return db.text != "" && sameName(db.text, n.Schema, fold)
		}
		if p.accept("TEMPORARY") {
			return false
		}
		if p.accept("INDEX") {
			return indexOn(p, currentSchema, n, fold)
		}
		if !p.accept("TABLE", "TABLES") {
			return false
		}
		p.accept("IF")
		p.accept("EXISTS")
		targets = p.names(currentSchema)
	case p.accept("TRUNCATE"):
		p.accept("TABLE")
		targets = p.names(currentSchema)
	case p.accept("CREATE"):
		if p.accept("OR") && !p.accept("REPLACE") {
			return false
		}
		if p.accept("TEMPORARY") {
			return false
		}
		if p.accept("UNIQUE", "FULLTEXT", "SPATIAL"); p.accept("INDEX") {
			return indexOn(p, currentSchema, n, fold)
		}
		if !p.accept("TABLE") {
			return false
		}
		p.accept("IF")
		p.accept("NOT")
		p.accept("EXISTS")
		targets = p.names(currentSchema)
	}
	for _, t := range targets {
		if sameTable(t, n, fold) {
			return true
		}
	}
	return false
}

// alterOthers reads the tables an ALTER TABLE's clauses name besides the altered one: the table whose rows an
// EXCHANGE PARTITION … WITH TABLE swaps in (without a row event), the new name of a RENAME [TO|AS], and
// MariaDB's CONVERT TABLE t TO PARTITION (the table leaves) and CONVERT PARTITION p TO TABLE t (it appears).
func alterOthers(p *parser, currentSchema string) []table.Name {
	var out []table.Name
	for p.i < len(p.toks) {
		switch {
		case p.accept("WITH", "CONVERT"), p.peek().is("TO") && p.i+1 < len(p.toks) && p.toks[p.i+1].is("TABLE"):
			p.accept("TO")
			if !p.accept("TABLE") {
				continue
			}
			if n, ok := p.name(currentSchema); ok {
				out = append(out, n)
			}
		case p.accept("RENAME"):
			if p.peek().is("COLUMN") || p.peek().is("INDEX") || p.peek().is("KEY") {
				continue
			}
			if !p.accept("TO", "AS") && p.peek().text == "=" && !p.peek().quoted {
				p.i++
			}
			if n, ok := p.name(currentSchema); ok {
				out = append(out, n)
			}
		default:
			p.i++
		}
	}
	return out
}

// indexOn finishes CREATE/DROP INDEX [IF [NOT] EXISTS] name ON table.
func indexOn(p *parser, currentSchema string, n table.Name, fold bool) bool {
	p.accept("IF")
	p.accept("NOT")
	p.accept("EXISTS")
	p.i++ // index name
	if !p.accept("ON") {
		return false
	}
	t, ok := p.name(currentSchema)
	return ok && sameTable(t, n, fold)
}

// statementWrite reports whether query is a statement-format write (INSERT, REPLACE, UPDATE, DELETE, LOAD
// DATA) that names the table n anywhere. Under binlog_format=ROW such writes never appear as Query events; one
// that does means a session switched to STATEMENT or MIXED, and its rows cannot be replayed exactly.
func statementWrite(query, currentSchema string, n table.Name, fold bool) bool {
	toks := tokenize(query)
	if len(toks) == 0 {
		return false
	}
	switch {
	case toks[0].is("INSERT"), toks[0].is("REPLACE"), toks[0].is("UPDATE"), toks[0].is("DELETE"), toks[0].is("LOAD"):
	default:
		return false
	}
	p := &parser{toks: toks}
	for p.i < len(toks) {
		start := p.i
		if t, ok := p.name(currentSchema); ok && sameTable(t, n, fold) {
			return true
		}
		if p.i == start {
			p.i++
		}
	}
	return false
}
