package harness

import (
	"database/sql"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var grantLineRE = regexp.MustCompile("^GRANT (.+) ON (\\S+) TO ")

// shownGrants reads SHOW GRANTS FOR user@'%' into object → sorted privileges.
func shownGrants(t *testing.T, db *sql.DB, user string) map[string]string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "SHOW GRANTS FOR "+Quote(nullString(user))+"@'%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		m := grantLineRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected grant line %q", line)
		}
		if m[1] == "USAGE" {
			continue
		}
		out[m[2]] = sortedPrivs(m[1])
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedPrivs(list string) string {
	ps := strings.Split(list, ",")
	for i := range ps {
		ps[i] = strings.TrimSpace(ps[i])
	}
	slices.Sort(ps)
	return strings.Join(ps, ", ")
}

// The users csmh-sync runs as hold the documented grants and nothing more: on a server with both tables the source
// user may read the source table and the binlog, and no other table of edxapp; the target user may write CSMHE and
// csmh-sync's tables, read the source table (the same-server copy), and nothing else.
func TestToolUsersHoldExactlyTheDocumentedGrants(t *testing.T) {
	ctx := t.Context()
	s := StartT(t, Options{})
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	before := gtidPos(t, open(t, s, ""))
	if err := s.createToolUsers(ctx, true, true); err != nil { // idempotent
		t.Fatal(err)
	}
	root := open(t, s, "")
	if after := gtidPos(t, root); after != before {
		t.Fatalf("creating the users again wrote to the binlog: %s → %s", before, after)
	}
	if _, err := root.ExecContext(ctx, "CREATE TABLE edxapp.auth_user (id int PRIMARY KEY, password varchar(128))"); err != nil {
		t.Fatal(err)
	}
	v, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for user, gs := range ToolGrants(v, true, true) {
		want := map[string]string{}
		for _, g := range gs {
			on := g.On.String()
			if have, ok := want[on]; ok {
				want[on] = sortedPrivs(have + ", " + strings.Join(g.Privileges, ", "))
			} else {
				want[on] = sortedPrivs(strings.Join(g.Privileges, ", "))
			}
		}
		if got := shownGrants(t, root, user); !maps.Equal(got, want) {
			t.Errorf("%s holds %v, want exactly %v", user, got, want)
		}
	}

	src := openUser(t, s, SourceUser)
	dst := openUser(t, s, TargetUser)
	for _, c := range []struct {
		db   *sql.DB
		q    string
		fail bool
	}{
		{src, "SELECT COUNT(*) FROM " + SourceTable, false},
		{src, "SHOW BINARY LOGS", false},
		{src, "SELECT COUNT(*) FROM edxapp.auth_user", true},
		{src, "SELECT COUNT(*) FROM " + TargetTable, true},
		{src, "DELETE FROM " + SourceTable, true},
		{dst, "SELECT COUNT(*) FROM " + SourceTable, false},
		{dst, "DELETE FROM " + TargetTable, false},
		{dst, "SELECT COUNT(*) FROM edxapp.auth_user", true},
		{dst, "DELETE FROM " + SourceTable, true},
		{dst, "CREATE TABLE edxapp_csmh.other (id int PRIMARY KEY)", true},
		{dst, "CREATE TABLE IF NOT EXISTS edxapp_csmh.csmh_sync_state (id int PRIMARY KEY)", false},
		{dst, "SHOW BINARY LOGS", true},
	} {
		_, err := c.db.ExecContext(ctx, c.q)
		if (err != nil) != c.fail {
			t.Errorf("%q: error %v, want failure %v", c.q, err, c.fail)
		}
	}
}

func openUser(t *testing.T, s *Server, user string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", s.UserDSN(user, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
