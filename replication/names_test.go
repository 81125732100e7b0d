package replication_test

import (
	"context"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// mixedCase names the source table in another case than the server stores it in.
var mixedCase = table.Name{Schema: "EDXAPP", Table: "Courseware_StudentModuleHistory"}

// A source with lower_case_table_names=1 (Windows' default) stores names in lower case and compares them
// case-insensitively: its binlog's table maps say edxapp.courseware_studentmodulehistory whatever case the
// table was configured or written in, and a DDL names the table as its statement wrote it. With the source
// table given as EDXAPP.Courseware_StudentModuleHistory, every change reaches the target and a DDL naming
// the table in yet another case stops the stream.
func TestSourceFoldingNames(t *testing.T) {
	f := newFixture(t, fixtureOptions{srcArgs: []string{"--lower-case-table-names=1"}})
	ctx := context.Background()
	info, err := dbconn.Inspect(ctx, f.toolSrcDB)
	if err != nil {
		t.Fatal(err)
	}
	if info.LowerCaseTableNames != 1 || !info.FoldsNames() {
		t.Fatalf("the source reports lower_case_table_names=%d, want 1", info.LowerCaseTableNames)
	}
	r := f.replicator(t, func(c *replication.Config) { c.SourceTable, c.FoldNames = mixedCase, info.FoldsNames() })
	run := start(t, r, f.start)
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, "EDXAPP.Courseware_StudentModuleHistory", harness.GenOptions{Rows: 300, Seed: 21, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	exec(t, f.srcDB, "UPDATE EDXAPP.COURSEWARE_STUDENTMODULEHISTORY SET grade = 0.5 WHERE id <= 50")
	exec(t, f.srcDB, "DELETE FROM edxapp.courseware_studentmodulehistory WHERE id BETWEEN 100 AND 119")
	f.waitCaughtUp(t, r, time.Minute)
	if n := f.sameRows(t); n != 280 {
		t.Fatalf("%d source rows compared, want 280", n)
	}

	exec(t, f.srcDB, "ALTER TABLE Edxapp.COURSEWARE_StudentModuleHistory ADD COLUMN extra int NULL")
	if err := run.wait(t, time.Minute); !isErr(err, replication.ErrDDL) {
		t.Fatalf("Run returned %v after an ALTER naming the source table in another case; want ErrDDL", err)
	}
}

// On a source with lower_case_table_names=0 (Linux's default, and RDS's) names differ by case: a table
// EDXAPP.Courseware_StudentModuleHistory beside edxapp.courseware_studentmodulehistory is another table, and
// neither its rows nor its DDL are the source table's.
func TestSourceComparingNamesExactly(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	info, err := dbconn.Inspect(ctx, f.toolSrcDB)
	if err != nil {
		t.Fatal(err)
	}
	if info.LowerCaseTableNames != 0 || info.FoldsNames() {
		t.Fatalf("the source reports lower_case_table_names=%d, want 0", info.LowerCaseTableNames)
	}
	r := f.replicator(t, func(c *replication.Config) { c.FoldNames = info.FoldsNames() })
	run := start(t, r, f.start)
	exec(t, f.srcDB, "CREATE DATABASE EDXAPP")
	exec(t, f.srcDB, "CREATE TABLE "+mixedCase.Quoted()+" LIKE "+harness.SourceTable)
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, mixedCase.Quoted(), harness.GenOptions{Rows: 50, Seed: 22, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	exec(t, f.srcDB, "ALTER TABLE "+mixedCase.Quoted()+" ADD COLUMN extra int NULL")
	exec(t, f.srcDB, "DROP DATABASE EDXAPP")
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 100, Seed: 23, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	f.waitCaughtUp(t, r, time.Minute)
	if n := f.sameRows(t); n != 100 {
		t.Fatalf("%d source rows compared, want 100", n)
	}
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v; want the stream to go on past another table's DDL", err)
	}
}
