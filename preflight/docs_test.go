package preflight_test

import (
	"os"
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/runner"
	"github.com/csmh-sync/csmh-sync/table"
)

// README.md and docs/runbook.md print every GRANT preflight checks, for the default tables and each server kind,
// and no other GRANT: the documentation and the check are one list.
func TestDocsListExactlyTheCheckedGrants(t *testing.T) {
	s := preflight.Setup{
		SourceTable: table.Name{Schema: "edxapp", Table: "courseware_studentmodulehistory"},
		TargetTable: table.Name{Schema: "edxapp_csmh", Table: "coursewarehistoryextended_studentmodulehistoryextended"},
		OwnTables:   runner.OwnTables(),
		ProbeTable:  checkpoint.ProbeTable,
	}
	mysql8021 := dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 0, Patch: 21, Raw: "8.0.21"}
	mariadb104 := dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 4, Patch: 32, Raw: "10.4.32-MariaDB"}
	var gs []preflight.Grant
	gs = append(gs, preflight.SourceGrants(s)...)
	gs = append(gs, preflight.TargetGrants(s)...)
	gs = append(gs, preflight.SameServerGrants(s)...)
	gs = append(gs, preflight.ReplicaGrants(dbconn.Version{})...)
	gs = append(gs, preflight.ReplicaGrants(mysql8021)...)
	gs = append(gs, preflight.SourceGrants(preflight.Setup{SourceTable: s.SourceTable, Source: mysql8021})...)
	gs = append(gs, preflight.SourceGrants(preflight.Setup{SourceTable: s.SourceTable, Source: mysql8021, FilePositions: true})...)
	gs = append(gs, preflight.TargetGrants(preflight.Setup{TargetTable: s.TargetTable, Target: mysql8021})...)
	gs = append(gs, preflight.SourceGrants(preflight.Setup{SourceTable: s.SourceTable, Source: mariadb104})...)
	want := map[string]bool{preflight.RDSGrant + " TO 'csmh'@'%';": true}
	for _, g := range gs {
		want[strings.ReplaceAll(g.Statement("'csmh'@'%'"), "`", "")+";"] = true
	}
	for _, doc := range []struct{ path, from, to string }{
		{"../README.md", "## Privileges", "\n## "},
		{"../docs/runbook.md", "**Privileges**", "**Source settings:**"},
	} {
		b, err := os.ReadFile(doc.path)
		if err != nil {
			t.Fatal(err)
		}
		_, text, ok := strings.Cut(string(b), doc.from)
		if text, _, _ = strings.Cut(text, doc.to); !ok {
			t.Fatalf("%s has no %q section", doc.path, doc.from)
		}
		for w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s lacks %s", doc.path, w)
			}
		}
		// Every GRANT statement in the section's SQL blocks is one preflight checks (a comment may name an older spelling).
		in := false
		for line := range strings.Lines(text) {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "```sql"):
				in = true
			case strings.HasPrefix(line, "```"):
				in = false
			case in && strings.HasPrefix(line, "GRANT "):
				stmt, _, _ := strings.Cut(line, "--")
				if stmt = strings.TrimSpace(stmt); !want[stmt] {
					t.Errorf("%s grants %s, which preflight does not check", doc.path, stmt)
				}
			}
		}
	}
}
