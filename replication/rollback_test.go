package replication_test

import (
	"context"
	"database/sql"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A source transaction that changed the source table and a table a rollback cannot undo reaches the binlog
// ending in ROLLBACK. On MariaDB 10.11 a MIXED-format session's transaction that writes rows of the source
// table (UUID() makes the statements unsafe, so they are logged as rows) and then creates a temporary
// MyISAM or Aria table is logged whole: its rows events, the temporary table's statements, ROLLBACK. None of
// its changes may reach the target, small or arriving in parts, and the stream goes on past it.
func TestRolledBackTransactionIsNotApplied(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { rolledBackTransaction(t, false) })
	t.Run("file position", func(t *testing.T) { rolledBackTransaction(t, true) })
}

func rolledBackTransaction(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	ctx := context.Background()
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 200, Seed: 11, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	var parts atomic.Int32
	r := f.replicator(t, func(c *replication.Config) {
		c.FragmentBytes = 256 << 10
		c.Hooks.FragmentApplied = func(string, int) error { parts.Add(1); return nil }
	})
	run := start(t, r, f.start)

	// Small, over one part, then 40 rows of 64 KiB that reach the applier in parts before the ROLLBACK does.
	rollBack(t, f.srcDB, "MyISAM", 3, 10)
	rollBack(t, f.srcDB, "Aria", 40, 65536)
	if n := rolledBackWithSourceRows(t, f.srcDB); n != 2 {
		t.Fatalf("the source's binlog holds %d transactions with rows of the source table ending in ROLLBACK, want 2: this server no longer logs them, and the test proves nothing", n)
	}
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), 'after the rollbacks', 99)")

	want := f.waitCaughtUp(t, r, 2*time.Minute)
	if n := f.sameRows(t); n != 201 {
		t.Fatalf("%d source rows, want the 200 generated and the one inserted after the rollbacks", n)
	}
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if parts.Load() == 0 {
		t.Fatal("no part of the large rolled-back transaction was applied before its ROLLBACK: the in-parts path was not exercised")
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txs := f.gtidAt(t, f.start).Behind(f.gtidAt(t, want))
	if withoutCreated(st.GTID) != want.String() || st.Applied.Inserts != 201 || st.Applied.Updates != 0 || st.Applied.Deletes != 0 ||
		st.Applied.Transactions != uint64(txs) {
		t.Fatalf("checkpoint %s, counters %+v; want %s, 201 inserts, no updates or deletes, %d transactions (the rolled-back ones too, once each)",
			st.GTID, st.Applied, want, txs)
	}
}

// rollBack runs, in a MIXED-format session, a transaction that inserts rows into the source table, updates
// and deletes some, writes a temporary table of engine, and rolls back.
func rollBack(t *testing.T, db *sql.DB, engine string, rows, size int) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tmp := "edxapp.scratch_" + strings.ToLower(engine)
	for _, q := range []string{"SET SESSION binlog_format = 'MIXED'", "BEGIN"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rows {
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), CONCAT(UUID(), REPEAT('r', ?)), ?)", size, i); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"UPDATE " + harness.SourceTable + " SET state = UUID() WHERE id <= 10",
		"DELETE FROM " + harness.SourceTable + " WHERE id BETWEEN 20 AND 29 AND UUID() <> ''",
		"CREATE TEMPORARY TABLE " + tmp + " (x int) ENGINE=" + engine,
		"INSERT INTO " + tmp + " VALUES (1)",
		"ROLLBACK",
		"DROP TEMPORARY TABLE " + tmp,
		"SET SESSION binlog_format = 'ROW'", // the connection goes back to the pool
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// rolledBackWithSourceRows counts the transactions of the source's current binlog that hold a rows event of
// the source table and end in ROLLBACK.
func rolledBackWithSourceRows(t *testing.T, db *sql.DB) int {
	return afterSourceRows(t, db, func(q string) bool { return q == "ROLLBACK" })
}

// afterSourceRows counts the Query events of the source's current binlog that is accepts and that follow a
// rows event of the source table in their transaction.
func afterSourceRows(t *testing.T, db *sql.DB, is func(query string) bool) int {
	t.Helper()
	file, _, err := dbconn.CurrentBinlogPos(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := db.Query("SHOW BINLOG EVENTS IN '" + file + "'")
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	n, source := 0, false
	for ev.Next() {
		var log, typ, info string
		var p, serverID, end uint64
		if err := ev.Scan(&log, &p, &typ, &serverID, &end, &info); err != nil {
			t.Fatal(err)
		}
		switch {
		case typ == "Gtid":
			source = false
		case typ == "Table_map" && strings.Contains(info, "(edxapp.courseware_studentmodulehistory)"):
			source = true
		case typ == "Query" && source && is(strings.TrimSpace(info)):
			n++
		}
	}
	if err := ev.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
