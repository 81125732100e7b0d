package preflight

import (
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

func parse(lines ...string) grants {
	var g grants
	for _, l := range lines {
		g.addLine(l)
	}
	return g
}

var (
	csmh  = table.Name{Schema: "edxapp", Table: "courseware_studentmodulehistory"}
	csmhe = table.Name{Schema: "edxapp_csmh", Table: "coursewarehistoryextended_studentmodulehistoryextended"}
	own   = []string{"csmh_sync_state", "csmh_sync_backfill"}
)

// SHOW GRANTS lines as MariaDB 10.11 prints them (taken from a server) and as MySQL 5.7 and 8.0 print them (their
// reference manuals' examples and forms).
func TestGrantLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		has  []string // "PRIV@object" that must hold, object as Object.String() prints it
		not  []string // and must not
		role bool
	}{
		{name: "MariaDB usage with password hash", line: "GRANT USAGE ON *.* TO `csmh`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'",
			not: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`", "USAGE, ON@*.*"}},
		{name: "MariaDB 10.5+ replication (REPLICATION CLIENT shown as BINLOG MONITOR)", line: "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `csmh`@`%`",
			has: []string{"REPLICATION SLAVE@*.*", "BINLOG MONITOR@*.*", "REPLICATION CLIENT@*.*"}, not: []string{"SLAVE MONITOR@*.*"}},
		{name: "MariaDB table grant", line: "GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO `csmh_src`@`%`",
			has: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`"},
			not: []string{"SELECT@`edxapp`.`auth_user`", "SELECT@`edxapp`.*", "INSERT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "MariaDB column grants count for nothing", line: "GRANT SELECT (`id`), INSERT (`id`, `state`) ON `edxapp`.`courseware_studentmodulehistory` TO `g`@`localhost`",
			not: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`", "INSERT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "MariaDB ALL PRIVILEGES on a database", line: "GRANT ALL PRIVILEGES ON `edxapp_csmh`.* TO `g`@`localhost`",
			has: []string{"DELETE@`edxapp_csmh`.`csmh_sync_state`", "CREATE@`edxapp_csmh`.*"}, not: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "MariaDB role", line: "GRANT `r1` TO `g`@`localhost`", role: true},
		{name: "MariaDB the session role's own grants", line: "GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO `r1`",
			has: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "MariaDB default role line", line: "SET DEFAULT ROLE `r1` FOR `g`@`localhost`"},
		{name: "MariaDB slave monitor", line: "GRANT SLAVE MONITOR ON *.* TO `csmh_replica`@`%`", has: []string{"SLAVE MONITOR@*.*", "REPLICA MONITOR@*.*"}},
		{name: "proxy", line: "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION", not: []string{"PROXY@*.*"}},
		{name: "MySQL 8 database grant", line: "GRANT SELECT, INSERT, UPDATE ON `db1`.* TO `jeffrey`@`localhost`",
			has: []string{"UPDATE@`db1`.`t`", "SELECT@`db1`.*"}, not: []string{"DELETE@`db1`.`t`", "SELECT@`db2`.`t`"}},
		{name: "MySQL 8 with grant option", line: "GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO `csmh`@`%` WITH GRANT OPTION",
			has: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "MySQL 8 dynamic privileges", line: "GRANT BACKUP_ADMIN,BINLOG_ADMIN ON *.* TO `u`@`%`", has: []string{"BINLOG_ADMIN@*.*"},
			not: []string{"BINLOG MONITOR@*.*"}},
		{name: "MySQL 8 roles", line: "GRANT `employee`@`%`,`role1`@`%` TO `test1`@`%`", role: true},
		{name: "MySQL routine", line: "GRANT EXECUTE ON PROCEDURE `mysql`.`rds_show_configuration` TO `csmh`@`%`",
			not: []string{"EXECUTE@`mysql`.`rds_show_configuration`", "EXECUTE@*.*"}},
		{name: "MySQL 5.7 replication", line: "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'csmh'@'%'",
			has: []string{"REPLICATION SLAVE@*.*", "BINLOG MONITOR@*.*"}},
		{name: "MySQL 8.0.0–8.0.21 lock tables", line: "GRANT LOCK TABLES ON `edxapp`.* TO `csmh`@`%`",
			has: []string{"LOCK TABLES@`edxapp`.*"}, not: []string{"SELECT@`edxapp`.`courseware_studentmodulehistory`"}},
		{name: "escaped underscore in a database name", line: "GRANT SELECT ON `edxapp\\_csmh`.* TO `u`@`%`",
			has: []string{"SELECT@`edxapp_csmh`.`t`"}},
		{name: "quoted backtick in a table name", line: "GRANT SELECT ON `d`.`a``b` TO `u`@`%`", has: []string{"SELECT@`d`.`a``b`"}},
		{name: "global ALL PRIVILEGES", line: "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
			has: []string{"REPLICATION SLAVE@*.*", "SELECT@`edxapp`.`courseware_studentmodulehistory`"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := parse(tc.line)
			if g.roles != tc.role {
				t.Errorf("roles = %v, want %v", g.roles, tc.role)
			}
			for _, want := range tc.has {
				if p, o := privAt(t, want); !g.has(p, o) {
					t.Errorf("%q: has(%s) = false, want true (parsed %v)", tc.line, want, g.privs)
				}
			}
			for _, want := range tc.not {
				if p, o := privAt(t, want); g.has(p, o) {
					t.Errorf("%q: has(%s) = true, want false (parsed %v)", tc.line, want, g.privs)
				}
			}
		})
	}
}

// privAt reads "PRIV@object" with the object as Object.String() prints it.
func privAt(t *testing.T, s string) (string, Object) {
	t.Helper()
	p, on, _ := strings.Cut(s, "@")
	o, ok := parseObject(on)
	if !ok {
		t.Fatalf("bad object %q", on)
	}
	return p, o
}

// The documented grants, as MariaDB shows them back, satisfy preflight; each privilege taken away fails it with
// the table-level GRANT that gives it back.
func TestDocumentedGrantsAreExactlyChecked(t *testing.T) {
	s := Setup{SourceTable: csmh, TargetTable: csmhe, OwnTables: own}
	for _, tc := range []struct {
		role string
		want []Grant
	}{
		{"source", SourceGrants(s)},
		{"target", append(TargetGrants(s), SameServerGrants(s)...)},
	} {
		lines := []string{"GRANT USAGE ON *.* TO `csmh`@`%`"}
		for _, g := range tc.want {
			lines = append(lines, g.Statement("`csmh`@`%`"))
		}
		r := &Report{}
		parse(lines...).report(r, tc.role, "'csmh'@'%'", tc.want, "fine")
		if len(r.Findings) != 1 || r.Findings[0].Level != OK {
			t.Fatalf("%s: all documented grants: %+v", tc.role, r.Findings)
		}
		for i, g := range tc.want {
			for j, p := range g.Privileges {
				less := slicesWithout(lines, i+1, g, j)
				r := &Report{}
				parse(less...).report(r, tc.role, "'csmh'@'%'", tc.want, "fine")
				want := Fail
				if g.Optional != "" {
					want = Warn
				}
				fix := "GRANT " + p + " ON " + g.On.String() + " TO 'csmh'@'%'"
				found := false
				for _, f := range r.Findings {
					if f.Level == want && strings.Contains(f.Msg, fix) {
						found = true
					}
					if f.Level == Fail && want == Warn {
						t.Errorf("%s without %s: an optional grant failed preflight: %s", tc.role, fix, f.Msg)
					}
				}
				if !found {
					t.Errorf("%s without %s on %s: no %s finding containing %q: %+v", tc.role, p, g.On, want, fix, r.Findings)
				}
			}
		}
	}
}

// slicesWithout returns lines with line i replaced by g's statement lacking its j-th privilege.
func slicesWithout(lines []string, i int, g Grant, j int) []string {
	out := append([]string(nil), lines...)
	rest := append(append([]string(nil), g.Privileges[:j]...), g.Privileges[j+1:]...)
	if len(rest) == 0 {
		out[i] = "GRANT USAGE ON *.* TO `csmh`@`%`"
	} else {
		g.Privileges = rest
		out[i] = g.Statement("`csmh`@`%`")
	}
	return out
}

func TestGrantsByVersion(t *testing.T) {
	v := func(f dbconn.Flavor, raw string) dbconn.Version {
		ver, err := dbconn.ParseVersion(raw, "")
		if err != nil {
			t.Fatal(err)
		}
		ver.Flavor = f
		return ver
	}
	stmts := func(gs []Grant) string {
		var s []string
		for _, g := range gs {
			s = append(s, g.Statement("u"))
		}
		return strings.Join(s, "; ")
	}
	for _, tc := range []struct {
		name        string
		got         []Grant
		want, never string
	}{
		{"MariaDB 10.11 source", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MariaDB, "10.11.19-MariaDB")}),
			"GRANT REPLICATION SLAVE ON *.* TO u; GRANT BINLOG MONITOR ON *.* TO u; GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO u", ""},
		{"MariaDB 10.4 source", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MariaDB, "10.4.32-MariaDB")}),
			"GRANT REPLICATION CLIENT ON *.* TO u", "BINLOG MONITOR"},
		{"MySQL 8.0.35 source: no REPLICATION CLIENT, no LOCK TABLES", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MySQL, "8.0.35")}),
			"GRANT REPLICATION SLAVE ON *.* TO u; GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO u", "CLIENT"},
		{"MySQL 8.4 source without GTIDs (file/position mode)", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MySQL, "8.4.3"), FilePositions: true}),
			"GRANT REPLICATION SLAVE ON *.* TO u; GRANT REPLICATION CLIENT ON *.* TO u; GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO u", ""},
		{"MariaDB source in file mode: BINLOG MONITOR covers it", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MariaDB, "10.11.19-MariaDB"), FilePositions: true}),
			"GRANT BINLOG MONITOR ON *.* TO u", "CLIENT"},
		{"MySQL 8.0.21 source", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MySQL, "8.0.21")}),
			"GRANT LOCK TABLES ON `edxapp`.* TO u", ""},
		{"Aurora MySQL 3 source", SourceGrants(Setup{SourceTable: csmh, Source: v(dbconn.MySQL, "8.0.mysql_aurora.3.04.0")}),
			"GRANT SELECT ON", "LOCK TABLES"},
		{"MySQL 8.0.21 same server", SameServerGrants(Setup{SourceTable: csmh, Target: v(dbconn.MySQL, "8.0.21")}),
			"GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO u; GRANT LOCK TABLES ON `edxapp`.* TO u", ""},
		{"MySQL target: ALTER TABLE wants CREATE too", TargetGrants(Setup{TargetTable: csmhe, Target: v(dbconn.MySQL, "8.0.35")}),
			"GRANT ALTER, CREATE ON `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` TO u", ""},
		{"MariaDB target", TargetGrants(Setup{TargetTable: csmhe, OwnTables: own, Target: v(dbconn.MariaDB, "10.11.19-MariaDB")}),
			"GRANT SELECT, INSERT, UPDATE, DELETE ON `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` TO u; GRANT ALTER ON `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` TO u; GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `edxapp_csmh`.`csmh_sync_state` TO u",
			"edxapp_csmh`.*"},
		{"MariaDB 10.11 replica", ReplicaGrants(v(dbconn.MariaDB, "10.11.19-MariaDB")), "GRANT SLAVE MONITOR ON *.* TO u", ""},
		{"MariaDB 10.5.8 replica", ReplicaGrants(v(dbconn.MariaDB, "10.5.8-MariaDB")), "GRANT REPLICATION SLAVE ADMIN ON *.* TO u", ""},
		{"MariaDB 10.4 replica", ReplicaGrants(v(dbconn.MariaDB, "10.4.32-MariaDB")), "GRANT REPLICATION CLIENT ON *.* TO u", ""},
		{"MySQL replica", ReplicaGrants(v(dbconn.MySQL, "8.0.35")), "GRANT REPLICATION CLIENT ON *.* TO u", ""},
	} {
		got := stmts(tc.got)
		if !strings.Contains(got, tc.want) || (tc.never != "" && strings.Contains(got, tc.never)) {
			t.Errorf("%s:\n got %s\nwant %s (and never %q)", tc.name, got, tc.want, tc.never)
		}
	}
}

// A read grant on the whole LMS database passes but is called out.
func TestWideSourceReadIsWarned(t *testing.T) {
	c := &Checker{cfg: Config{SourceTable: csmh, TargetTable: csmhe}}
	g := parse("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `csmh`@`%`", "GRANT SELECT ON `edxapp`.* TO `csmh`@`%`")
	r := &Report{}
	g.report(r, "source", "'csmh'@'%'", SourceGrants(c.setup(dbconn.Version{}, dbconn.Version{})), "fine")
	c.warnWideRead(r, g, "'csmh'@'%'")
	if r.Failed() || len(r.Findings) != 2 || r.Findings[1].Level != Warn ||
		!strings.Contains(r.Findings[1].Msg, "grant SELECT on `edxapp`.`courseware_studentmodulehistory` alone") {
		t.Fatalf("findings: %+v", r.Findings)
	}
}
