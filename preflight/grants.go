package preflight

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// grants is what SHOW GRANTS says the current user may do, by object.
type grants struct {
	privs map[Object]map[string]bool
	// roles is set when the user holds roles: MySQL's SHOW GRANTS lists them without their privileges.
	roles bool
}

// aliases are privileges the servers show under another name: MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG
// MONITOR (and shows the new name for either) and added REPLICA spellings.
var aliases = map[string]string{
	"REPLICATION SLAVE":       "REPLICATION REPLICA",
	"REPLICATION REPLICA":     "REPLICATION SLAVE",
	"BINLOG MONITOR":          "REPLICATION CLIENT",
	"REPLICATION CLIENT":      "BINLOG MONITOR",
	"SLAVE MONITOR":           "REPLICA MONITOR",
	"REPLICA MONITOR":         "SLAVE MONITOR",
	"REPLICATION SLAVE ADMIN": "REPLICATION REPLICA ADMIN",
}

// loadGrants reads SHOW GRANTS, which on MariaDB also lists the privileges of the session's role, and the user's
// account name as GRANT takes it ('user'@'host').
func loadGrants(ctx context.Context, db *sql.DB) (grants, string, error) {
	var account string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&account); err != nil {
		return grants{}, "", err
	}
	user, host, _ := strings.Cut(account, "@")
	account = "'" + strings.ReplaceAll(user, "'", "''") + "'@'" + strings.ReplaceAll(host, "'", "''") + "'"
	rows, err := db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return grants{}, account, err
	}
	defer rows.Close()
	g := grants{privs: map[Object]map[string]bool{}}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return grants{}, account, err
		}
		g.addLine(line)
	}
	return g, account, rows.Err()
}

// addLine records one line of SHOW GRANTS. Privileges on columns or routines, proxy grants and lines it cannot
// read are left out: they never satisfy a table-level requirement.
func (g *grants) addLine(line string) {
	privs, on, ok := splitGrant(line)
	if !ok {
		return
	}
	if on == "" { // GRANT `role`@`%` TO …
		g.roles = true
		return
	}
	obj, ok := parseObject(on)
	if !ok {
		return
	}
	if g.privs == nil {
		g.privs = map[Object]map[string]bool{}
	}
	if g.privs[obj] == nil {
		g.privs[obj] = map[string]bool{}
	}
	for _, p := range privs {
		if strings.Contains(p, "(") { // SELECT (`id`, `state`): some columns only
			continue
		}
		g.privs[obj][strings.ToUpper(strings.Join(strings.Fields(p), " "))] = true
	}
}

// splitGrant cuts "GRANT <privileges> ON <object> TO <account> …" into the privileges (split at the commas outside
// parentheses and quotes) and the object text; on is empty for a role grant ("GRANT <role> TO <account>").
func splitGrant(line string) (privs []string, on string, ok bool) {
	rest, found := cutPrefixFold(strings.TrimSpace(line), "GRANT ")
	if !found {
		return nil, "", false
	}
	depth, quote, start := 0, byte(0), 0
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '`' || c == '\'' || c == '"':
			quote = c
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && c == ',':
			privs = append(privs, strings.TrimSpace(rest[start:i]))
			start = i + 1
		case depth == 0 && c == ' ' && hasPrefixFold(rest[i:], " ON "):
			privs = append(privs, strings.TrimSpace(rest[start:i]))
			obj := rest[i+4:]
			end := indexTo(obj)
			if end < 0 {
				return nil, "", false
			}
			return privs, strings.TrimSpace(obj[:end]), true
		case depth == 0 && c == ' ' && hasPrefixFold(rest[i:], " TO "):
			return nil, "", true // a role grant
		}
	}
	return nil, "", false
}

// indexTo finds " TO " outside quotes.
func indexTo(s string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '`' || c == '\'':
			quote = c
		case c == ' ' && hasPrefixFold(s[i:], " TO "):
			return i
		}
	}
	return -1
}

// parseObject reads *.*, `db`.*, `db`.`t` (and unquoted names). Routine privileges (ON PROCEDURE …) and proxy
// grants (ON an account) are not objects csmh-sync needs.
func parseObject(s string) (Object, bool) {
	if s == "*" || s == "*.*" {
		return Object{}, true
	}
	db, rest, ok := ident(s)
	if !ok || !strings.HasPrefix(rest, ".") {
		return Object{}, false
	}
	rest = rest[1:]
	// A database name in a grant is a pattern in which \_ and \% stand for the characters themselves.
	db = strings.NewReplacer(`\_`, "_", `\%`, "%").Replace(db)
	if rest == "*" {
		return Object{DB: db}, true
	}
	t, rest, ok := ident(rest)
	if !ok || rest != "" {
		return Object{}, false
	}
	return Object{DB: db, Table: t}, true
}

// ident reads one identifier, `quoted` (“ inside stands for `) or bare, and returns what follows it.
func ident(s string) (name, rest string, ok bool) {
	if strings.HasPrefix(s, "`") {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] == '`' {
				if i+1 < len(s) && s[i+1] == '`' {
					b.WriteByte('`')
					i++
					continue
				}
				return b.String(), s[i+1:], true
			}
			b.WriteByte(s[i])
		}
		return "", "", false
	}
	end := strings.IndexAny(s, ". '@")
	if end < 0 {
		end = len(s)
	}
	if end == 0 {
		return "", "", false
	}
	return s[:end], s[end:], true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if !hasPrefixFold(s, prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// has reports whether priv (under any of its names, or ALL PRIVILEGES) is granted on obj, its database or
// globally.
func (g grants) has(priv string, obj Object) bool {
	names := []string{priv}
	if a, ok := aliases[priv]; ok {
		names = append(names, a)
	}
	levels := []Object{{}}
	if obj.DB != "" {
		levels = append(levels, Object{DB: obj.DB})
	}
	if obj.Table != "" {
		levels = append(levels, obj)
	}
	for _, l := range levels {
		p := g.privs[l]
		if p == nil {
			continue
		}
		if p["ALL PRIVILEGES"] || p["ALL"] {
			return true
		}
		for _, n := range names {
			if p[n] {
				return true
			}
		}
	}
	return false
}

// missing returns, for each grant of want, the part g lacks: nil when everything is there.
func (g grants) missing(want []Grant) []Grant {
	var out []Grant
	for _, w := range want {
		var lack []string
		for _, p := range w.Privileges {
			if !g.has(p, w.On) {
				lack = append(lack, p)
			}
		}
		if len(lack) > 0 {
			w.Privileges = lack
			out = append(out, w)
		}
	}
	return out
}

// statements joins the GRANT statements of gs for account.
func statements(gs []Grant, account string) string {
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = g.Statement(account)
	}
	return strings.Join(s, "; ")
}

// describe lists what gs grant: "SELECT, INSERT on `db`.`t`, REPLICATION SLAVE on *.*".
func describe(gs []Grant) string {
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = strings.Join(g.Privileges, ", ") + " on " + g.On.String()
	}
	return strings.Join(s, "; ")
}

// split separates the grants every run needs from the optional ones.
func split(gs []Grant) (required, optional []Grant) {
	for _, g := range gs {
		if g.Optional == "" {
			required = append(required, g)
		} else {
			optional = append(optional, g)
		}
	}
	return required, optional
}

// report adds the findings for one user: a failure naming every missing required grant with the statements that
// give it, a warning per optional grant missing, or ok.
func (g grants) report(r *Report, role, account string, want []Grant, okMsg string) {
	required, optional := split(want)
	if lack := g.missing(required); len(lack) > 0 {
		hint := ""
		if g.roles {
			hint = " (privileges the user holds through roles are not listed by MySQL's SHOW GRANTS: grant them to the user)"
		}
		r.add(Fail, "grants", "the %s user %s lacks %s: run %s%s", role, account, describe(lack), statements(lack, account), hint)
	} else {
		r.add(OK, "grants", "%s", okMsg)
	}
	for _, o := range g.missing(optional) {
		r.add(Warn, "grants", "the %s user %s lacks %s, which %s needs: run %s", role, account, describe([]Grant{o}), o.Optional,
			o.Statement(account))
	}
}

func (c *Checker) setup(src, dst dbconn.Version) Setup {
	return Setup{SourceTable: c.cfg.SourceTable, TargetTable: c.cfg.TargetTable, OwnTables: c.cfg.OwnTables, ProbeTable: c.cfg.ProbeTable, Source: src, Target: dst}
}

func (c *Checker) checkSourceGrants(ctx context.Context, r *Report, db *sql.DB, si dbconn.ServerInfo) {
	g, account, err := loadGrants(ctx, db)
	if err != nil {
		r.add(Warn, "grants", "cannot read the source user's grants (%v): privileges not checked", err)
		return
	}
	s := c.setup(si.Version, dbconn.Version{})
	// What the stream will follow: --position file, or what auto picks on a MySQL source without GTIDs.
	s.FilePositions = c.cfg.Position == "file" || c.cfg.Position != "gtid" && si.Version.Flavor == dbconn.MySQL && si.GTIDMode != "ON"
	g.report(r, "source", account, SourceGrants(s), "source user may read the binlog and the source table")
	c.warnWideRead(r, g, account)
}

// warnWideRead warns about a read grant on all of the source table's database, which holds the LMS's password
// hashes and OAuth tokens, or on every database: more than csmh-sync needs.
func (c *Checker) warnWideRead(r *Report, g grants, account string) {
	st := tableObject(c.cfg.SourceTable)
	for _, wide := range []Object{{}, {DB: st.DB}} {
		if p := g.privs[wide]; p != nil && (p["SELECT"] || p["ALL PRIVILEGES"] || p["ALL"]) {
			what := "every database"
			if wide.DB != "" {
				what = wide.String()
			}
			r.add(Warn, "grants", "the source user %s may read every table of %s (SELECT on %s), more than csmh-sync needs: grant SELECT on %s alone and revoke the rest",
				account, what, wide, st)
			return
		}
	}
}

func (c *Checker) checkTargetGrants(ctx context.Context, r *Report, db *sql.DB, src, dst dbconn.Version, same bool) {
	g, account, err := loadGrants(ctx, db)
	if err != nil {
		r.add(Warn, "grants", "cannot read the target user's grants (%v): privileges not checked", err)
		return
	}
	s := c.setup(src, dst)
	want := TargetGrants(s)
	if same {
		want = append(want, SameServerGrants(s)...)
	}
	g.report(r, "target", account, want, fmt.Sprintf("target user may write %s and csmh-sync's tables beside it", c.cfg.TargetTable))
}
