package replication_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A ROLLBACK TO SAVEPOINT undoes the source-table rows written since the savepoint. When a MIXED-format session
// has created a temporary MyISAM table meanwhile, MariaDB keeps those rows events in the binlog, followed by a
// ROLLBACK TO event, and the transaction goes on and commits: only the changes before the savepoint and after
// the rollback to it exist on the source, and only they may reach the target.
func TestRolledBackToSavepointIsNotApplied(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { rolledBackToSavepoint(t, false) })
	t.Run("file position", func(t *testing.T) { rolledBackToSavepoint(t, true) })
}

func rolledBackToSavepoint(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	ctx := context.Background()
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 50, Seed: 12, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	rollBackToSavepoint(t, f.srcDB, 1, 10)
	if n := rolledBackToWithSourceRows(t, f.srcDB); n != 1 {
		t.Fatalf("the source's binlog holds %d ROLLBACK TO events after rows of the source table, want 1: this server no longer logs them, and the test proves nothing", n)
	}
	f.waitCaughtUp(t, r, 2*time.Minute)
	if n := f.sameRows(t); n != 52 {
		t.Fatalf("%d source rows, want the 50 generated and the two kept by the transaction", n)
	}
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied.Inserts != 52 || st.Applied.Updates != 0 || st.Applied.Deletes != 0 {
		t.Fatalf("counters %+v, want 52 inserts and nothing rolled back", st.Applied)
	}
}

// Changes since the savepoint that already reached the applier in parts cannot be taken back: the stream stops
// with ErrUnsupported instead of applying them.
func TestRollbackToSavepointPastPartsStops(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 50, Seed: 13, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	r := f.replicator(t, func(c *replication.Config) { c.FragmentBytes = 256 << 10 })
	run := start(t, r, f.start)
	rollBackToSavepoint(t, f.srcDB, 40, 65536)
	err := run.wait(t, 2*time.Minute)
	if !errors.Is(err, replication.ErrUnsupported) || !strings.Contains(err.Error(), "savepoint") {
		t.Fatalf("Run: %v, want ErrUnsupported naming the savepoint", err)
	}
	var rolledBack int
	if err := f.dstDB.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable + " WHERE state LIKE '%rolled back%'").Scan(&rolledBack); err != nil {
		t.Fatal(err)
	}
	if rolledBack != 0 {
		t.Fatalf("%d rows the source rolled back reached the target", rolledBack)
	}
}

// rollBackToSavepoint runs, in a MIXED-format session, a transaction that inserts a row, sets a savepoint,
// inserts rows rows of size bytes and updates some, writes a temporary MyISAM table, rolls back to the
// savepoint, inserts another row and commits.
func rollBackToSavepoint(t *testing.T, db *sql.DB, rows, size int) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ins := "INSERT INTO " + harness.SourceTable + " (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), CONCAT(UUID(), ?, REPEAT('r', ?)), 7)"
	steps := []struct {
		sql  string
		args []any
	}{
		{"SET SESSION binlog_format = 'MIXED'", nil},
		{"BEGIN", nil},
		{ins, []any{"kept before", 0}},
		{"SAVEPOINT sp", nil},
	}
	for range rows {
		steps = append(steps, struct {
			sql  string
			args []any
		}{ins, []any{"rolled back", size}})
	}
	for _, q := range []string{
		"UPDATE " + harness.SourceTable + " SET state = UUID() WHERE id <= 5",
		"CREATE TEMPORARY TABLE edxapp.scratch_sp (x int) ENGINE=MyISAM",
		"INSERT INTO edxapp.scratch_sp VALUES (1)",
		"ROLLBACK TO SAVEPOINT sp",
	} {
		steps = append(steps, struct {
			sql  string
			args []any
		}{q, nil})
	}
	steps = append(steps, []struct {
		sql  string
		args []any
	}{
		{ins, []any{"kept after", 0}},
		{"COMMIT", nil},
		{"DROP TEMPORARY TABLE edxapp.scratch_sp", nil},
		{"SET SESSION binlog_format = 'ROW'", nil}, // the connection goes back to the pool
	}...)
	for _, q := range steps {
		if _, err := conn.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
}

// rolledBackToWithSourceRows counts the ROLLBACK TO events of the source's current binlog that follow a rows
// event of the source table in their transaction.
func rolledBackToWithSourceRows(t *testing.T, db *sql.DB) int {
	return afterSourceRows(t, db, func(q string) bool { return strings.HasPrefix(q, "ROLLBACK TO") })
}
