package preflight

import (
	"context"
	"database/sql"
	"regexp"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// grants holds what SHOW GRANTS says the current user may do, by object ("*.*", "`db`.*", "`db`.`t`").
type grants map[string]map[string]bool

var grantRE = regexp.MustCompile(`(?i)^GRANT (.+?) ON (\S+) TO `)

func loadGrants(ctx context.Context, db *sql.DB) (grants, error) {
	rows, err := db.QueryContext(ctx, "SHOW GRANTS FOR CURRENT_USER()")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	g := grants{}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, err
		}
		g.addLine(line)
	}
	return g, rows.Err()
}

func (g grants) addLine(line string) {
	m := grantRE.FindStringSubmatch(line)
	if m == nil {
		return
	}
	obj := strings.ReplaceAll(m[2], "`", "")
	if g[obj] == nil {
		g[obj] = map[string]bool{}
	}
	for _, p := range strings.Split(m[1], ",") {
		p = strings.ToUpper(strings.TrimSpace(p))
		if i := strings.Index(p, "("); i >= 0 { // column privileges: SELECT (a, b)
			p = strings.TrimSpace(p[:i])
		}
		g[obj][p] = true
	}
}

// has reports whether priv (or ALL PRIVILEGES) is granted on the table, its database or globally.
func (g grants) has(priv, db, tbl string) bool {
	for _, obj := range []string{"*.*", db + ".*", db + "." + tbl} {
		if p := g[obj]; p != nil && (p[priv] || p["ALL PRIVILEGES"] || p["ALL"]) {
			return true
		}
	}
	return false
}

func (c *Checker) checkSourceGrants(ctx context.Context, r *Report, db *sql.DB, si dbconn.ServerInfo, _ *mysql.Config) {
	g, err := loadGrants(ctx, db)
	if err != nil {
		r.add(Warn, "grants", "cannot read the source user's grants (%v): privileges not checked", err)
		return
	}
	var missing []string
	if !g.has("REPLICATION SLAVE", "", "") && !g.has("REPLICATION REPLICA", "", "") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	client := g.has("REPLICATION CLIENT", "", "") || g.has("BINLOG MONITOR", "", "") || g.has("SUPER", "", "")
	if !client {
		if si.Version.Flavor == dbconn.MariaDB && si.Version.AtLeast(10, 5) {
			missing = append(missing, "BINLOG MONITOR")
		} else {
			missing = append(missing, "REPLICATION CLIENT")
		}
	}
	s := c.cfg.SourceTable
	if !g.has("SELECT", s.Schema, s.Table) {
		missing = append(missing, "SELECT ON "+s.Schema+".*")
	}
	if len(missing) > 0 {
		r.add(Fail, "grants", "the source user lacks %s: GRANT %s TO the user (REPLICATION privileges ON *.*)",
			strings.Join(missing, ", "), strings.Join(missing, ", "))
		return
	}
	r.add(OK, "grants", "source user may read the binlog and the source table")
}

func (c *Checker) checkTargetGrants(ctx context.Context, r *Report, db *sql.DB) {
	g, err := loadGrants(ctx, db)
	if err != nil {
		r.add(Warn, "grants", "cannot read the target user's grants (%v): privileges not checked", err)
		return
	}
	t := c.cfg.TargetTable
	var missing []string
	for _, p := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"} {
		if !g.has(p, t.Schema, t.Table) && !(p == "CREATE" && g.has(p, t.Schema, "")) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		r.add(Fail, "grants", "the target user lacks %s on %s: GRANT %s ON %s.* TO the user",
			strings.Join(missing, ", "), t.Schema, strings.Join(missing, ", "), t.Schema)
		return
	}
	r.add(OK, "grants", "target user may write %s and its checkpoint tables", t.Schema)
}
