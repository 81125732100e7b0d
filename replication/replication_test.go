package replication_test

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// Every kind of change and value reaches the target exactly: NULLs, 4-byte UTF-8, a 16 MiB state,
// microsecond datetimes, doubles that have no short binary form, id-changing updates, multi-statement
// transactions, and transactions of other tables in between.
func TestApplyCorrectness(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	// Half the rows exist before the stream starts reading, half arrive while it runs.
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 1500, Seed: 1, LargeStateEvery: 300}); err != nil {
		t.Fatal(err)
	}
	r := f.replicator(t, func(c *replication.Config) { c.BatchRows = 500 })
	run := start(t, r, f.start)
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 1500, StartID: 100000, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	ins := "INSERT INTO " + harness.SourceTable + " (id, version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
	exec(t, f.srcDB, ins, 1000001, nil, "2016-02-29 23:59:59.999999", nil, nil, nil, 1)
	exec(t, f.srcDB, ins, 1000002, "v1", "2013-01-01 00:00:00.000001", "emoji 😀🎓 𠜎 and quotes ' \" \\ \x00 end", 0.1, 1e-7, 4000000)
	exec(t, f.srcDB, ins, 1000003, "", "2026-11-01 12:34:56.5", "{}", 0.333333333333, 2.0/3.0, 5)
	big := strings.Repeat("16 MiB of state, 4-byte 😀 included; ", (16<<20)/40)
	exec(t, f.srcDB, ins, 1000004, "big", "2020-01-01 00:00:00.123456", big, 1.5, 3, 6)
	// Updates: of one row, of many rows in one statement, of the big row, and one that changes the id.
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET state = CONCAT(state, ' ✓'), grade = 0.1 WHERE id = 1000002")
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET grade = grade / 3, version = NULL WHERE id BETWEEN 10 AND 400")
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET state = CONCAT(state, '+'), max_grade = 0.333333333333 WHERE id = 1000004")
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET id = 2000000 WHERE id = 1000003")
	// Deletes, single and ranged.
	exec(t, f.srcDB, "DELETE FROM "+harness.SourceTable+" WHERE id = 1000001")
	exec(t, f.srcDB, "DELETE FROM "+harness.SourceTable+" WHERE id BETWEEN 500 AND 900")
	// One transaction doing all three to the same rows, and writes to another table between them.
	exec(t, f.srcDB, "CREATE TABLE edxapp.other (id int PRIMARY KEY, v text)")
	tx, err := f.srcDB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES (3000000, '2024-05-05 05:05:05.050505', 'new', 9)",
		"INSERT INTO edxapp.other VALUES (1, 'x')",
		"UPDATE " + harness.SourceTable + " SET state = 'updated in the same transaction' WHERE id = 3000000",
		"DELETE FROM " + harness.SourceTable + " WHERE id = 1000002",
		"INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES (1000002, '2024-05-05 05:05:05', 'reinserted', 10)",
	} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 50; i++ {
		exec(t, f.srcDB, "INSERT INTO edxapp.other VALUES (?, 'y')", i)
	}

	want := f.waitCaughtUp(t, r, 2*time.Minute)
	n := f.sameRows(t)
	if n < 2500 {
		t.Fatalf("only %d rows compared", n)
	}
	// The exact doubles, checked on the target by value, not only by their text.
	var exact int
	if err := f.dstDB.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable + " WHERE (id = 2000000 AND grade = 0.333333333333 AND max_grade = 2e0/3e0) OR (id = 1000004 AND max_grade = 0.333333333333 AND LENGTH(state) > 16000000)").Scan(&exact); err != nil || exact != 2 {
		t.Fatalf("exact doubles / big state on the target: %d rows match (%v), want 2", exact, err)
	}
	if got := checkpointGTID(t, f); got != want.String() {
		t.Fatalf("checkpoint %q, want the source's executed %q", got, want)
	}
	if !r.Connected() || value(f.m.Connected) != 1 {
		t.Fatal("not reported connected")
	}
	if value(f.m.AppliedRows.WithLabelValues("delete")) < 400 || value(f.m.AppliedTx) < 50 {
		t.Fatalf("metrics: deletes %v, transactions %v", value(f.m.AppliedRows.WithLabelValues("delete")), value(f.m.AppliedTx))
	}
	// Idle and caught up: the lag reads 0 (heartbeats prove the source alive) and the probes agree.
	harness.Eventually(t, 10*time.Second, "lag 0 and probes current while idle", func() (bool, error) {
		return r.Lag() == 0 && value(f.m.Lag) == 0 && value(f.m.TxBehind) == 0 && value(f.m.CheckpointAge) == 0 &&
			math.IsInf(value(f.m.RetentionHeadroom), 1) && value(f.m.SourceIDUsed) > 0, nil
	})
	if err := run.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if r.Connected() || value(f.m.Connected) != 0 {
		t.Fatal("still reported connected after Run returned")
	}
	noLeaks(t)
}

// noLeaks waits until no goroutine of the stream (ours or go-mysql's) is left.
func noLeaks(t *testing.T) {
	t.Helper()
	var stacks string
	harness.Eventually(t, 10*time.Second, "stream goroutines gone", func() (bool, error) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, "go-mysql-org/go-mysql/replication.") &&
			!strings.Contains(stacks, "csmh-sync/replication.(*"), nil
	})
}

// Stopping mid-load and resuming from the stored checkpoint applies every source transaction exactly once.
func TestExactlyOnceAcrossRestart(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 500, Seed: 3, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	// A steady stream of small transactions, so the stop lands in the middle of it.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	load, err := harness.NewLoadGen(f.srcDB, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 400, Conns: 4, MaxOps: 1500, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(loadCtx) }()

	batches := make(chan string, 1000)
	r1 := f.replicator(t, func(c *replication.Config) {
		c.BatchRows = 20
		c.Hooks.AfterBatchApplied = func(pos string) { batches <- pos }
	})
	run1 := start(t, r1, f.start)
	for i := 0; i < 15; i++ {
		select {
		case <-batches:
		case <-time.After(time.Minute):
			t.Fatal("no batches applied")
		}
	}
	if err := run1.stop(t); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GTID != r1.Position().String() {
		t.Fatalf("stored checkpoint %s, replicator said %s", st.GTID, r1.Position())
	}
	if f.executed(t).Contains(mustParse(t, st.GTID)) && mustParse(t, st.GTID).Contains(f.executed(t)) {
		t.Log("note: the load had already finished when the first run stopped")
	}
	r2 := f.replicator(t, nil)
	run2 := start(t, r2, mustParse(t, st.GTID))
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	want := f.waitCaughtUp(t, r2, 2*time.Minute)
	f.sameRows(t)
	if err := run2.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	st, err = f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GTID != want.String() {
		t.Fatalf("checkpoint %s, want %s", st.GTID, want)
	}
	if n := uint64(f.start.Behind(want)); st.Applied.Transactions != n {
		t.Fatalf("applied_transactions = %d, the source wrote %d transactions: some were counted twice or never", st.Applied.Transactions, n)
	}
	s := load.Stats()
	if st.Applied.Inserts < uint64(s.Inserts)+500 || st.Applied.Deletes != uint64(s.Deletes) {
		t.Fatalf("counters %+v, load %+v (+500 generated rows)", st.Applied, s)
	}
}

func mustParse(t *testing.T, s string) *gtid.Set {
	t.Helper()
	g, err := gtid.Parse("mariadb", s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// A source restart in the middle of a write load: the stream notices, reconnects and catches up. The source
// logs full row metadata here, so column positions are mapped by the names in the table-map events.
func TestSourceRestart(t *testing.T) {
	f := newFixture(t, fixtureOptions{srcArgs: []string{"--binlog-row-metadata=FULL"}})
	ctx := context.Background()
	if _, err := harness.GenerateCSMH(ctx, f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 1000, Seed: 5, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	harness.Eventually(t, 30*time.Second, "connected", func() (bool, error) { return r.Connected(), nil })

	loadCtx, stopLoad := context.WithCancel(ctx)
	load, err := harness.NewLoadGen(f.srcDB, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 300, Conns: 8, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(loadCtx) }()
	harness.Eventually(t, 30*time.Second, "load applied", func() (bool, error) {
		return load.Stats().Inserts > 100 && r.Position().String() != f.start.String(), nil
	})

	restartDone := make(chan error, 1)
	go func() { restartDone <- f.src.Restart(ctx) }()
	harness.Eventually(t, time.Minute, "disconnect noticed", func() (bool, error) { return !r.Connected(), nil })
	if err := <-restartDone; err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "reconnected", func() (bool, error) { return r.Connected(), nil })
	before := load.Stats().Inserts
	harness.Eventually(t, 30*time.Second, "load resumed", func() (bool, error) { return load.Stats().Inserts > before+100, nil })
	// The target restarts too: its connections break mid-batch; the batch is retried from the checkpoint.
	applied := value(f.m.AppliedTx)
	if err := f.dst.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "applying again after the target restart", func() (bool, error) {
		return value(f.m.AppliedTx) > applied+50, nil
	})
	stopLoad()
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	f.waitCaughtUp(t, r, 2*time.Minute)
	f.sameRows(t)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	noLeaks(t)
}

// ALTER TABLE on the source table stops the stream after checkpointing the transaction before it; DDL of
// other tables does not. The stop names the DDL as --accept-ddl takes it: its GTID, or in file mode the binlog
// position it starts at (where the checkpoint now stands).
func TestStopsOnSourceDDL(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { stopsOnSourceDDL(t, false) })
	t.Run("file position", func(t *testing.T) { stopsOnSourceDDL(t, true) })
}

func stopsOnSourceDDL(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	// The stream has loaded the table's definition (at connect) before the ALTER: loaded after it, the
	// definition would not describe the rows before it, and the stop would be about those rows, not the DDL.
	f.waitCaughtUp(t, r, time.Minute)
	exec(t, f.srcDB, "CREATE TABLE edxapp.courseware_studentmodulehistory_old (id int PRIMARY KEY)")
	exec(t, f.srcDB, "ALTER TABLE edxapp.courseware_studentmodulehistory_old ADD x int")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (2, NOW(6), 7)")
	before := f.executed(t)
	exec(t, f.srcDB, "ALTER TABLE "+harness.SourceTable+" ADD COLUMN extra int NULL")
	alter := f.executed(t).String() // the ALTER's own GTID: nothing else ran in between
	if fileMode {
		alter = before.String() // the ALTER's transaction starts where the one before it ended
	}
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id, extra) VALUES (3, NOW(6), 7, 1)")
	err := run.wait(t, time.Minute)
	if !isErr(err, replication.ErrDDL) || !strings.Contains(err.Error(), "ALTER TABLE") || !strings.Contains(err.Error(), "re-run preflight") ||
		!strings.Contains(err.Error(), "transaction "+alter+")") {
		t.Fatalf("Run returned %v; want ErrDDL naming the statement, its transaction %s and the remedy", err, alter)
	}
	if got := checkpointGTID(t, f); got != before.String() {
		t.Fatalf("checkpoint %s, want the transaction before the ALTER, %s", got, before)
	}
	var ids string
	if err := f.dstDB.QueryRow("SELECT GROUP_CONCAT(id ORDER BY id) FROM " + harness.TargetTable).Scan(&ids); err != nil || ids != "1,2" {
		t.Fatalf("target ids %q (%v), want 1,2", ids, err)
	}

	// Restarting as it is stops at the same DDL again; after the target is adapted and the DDL accepted by
	// its GTID, the stream goes on with the new column.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.replicator(t, nil).Run(ctx, before); !isErr(err, replication.ErrSchema) || !strings.Contains(err.Error(), "no column extra") {
		t.Fatalf("restart before adapting the target: %v; want ErrSchema naming the column", err)
	}
	exec(t, f.dstDB, "ALTER TABLE "+harness.TargetTable+" ADD COLUMN extra int NULL")
	var unproven atomic.Int32 // verify's proofs dropped: the DDL's changes to the rows are in no row event
	forget := func(c *replication.Config) { c.Unproven = func(context.Context) error { unproven.Add(1); return nil } }
	if err := f.replicator(t, forget).Run(ctx, before); !isErr(err, replication.ErrDDL) || !strings.Contains(err.Error(), alter) {
		t.Fatalf("restart without accepting: %v; want ErrDDL naming %s", err, alter)
	}
	if n := unproven.Load(); n != 0 {
		t.Fatalf("verify's proofs were dropped %d times without the DDL accepted", n)
	}
	r2 := f.replicator(t, func(c *replication.Config) { c.AcceptDDL = alter; forget(c) })
	run2 := start(t, r2, before)
	f.waitCaughtUp(t, r2, time.Minute)
	f.sameRows(t)
	if n := unproven.Load(); n != 1 {
		t.Fatalf("verify's proofs were dropped %d times passing the accepted DDL, want once", n)
	}
	var extra int
	if err := f.dstDB.QueryRow("SELECT extra FROM " + harness.TargetTable + " WHERE id = 3").Scan(&extra); err != nil || extra != 1 {
		t.Fatalf("new column on the target: %d (%v)", extra, err)
	}
	if err := run2.stop(t); err != nil {
		t.Fatal(err)
	}
}

// A target that hangs in the middle of the stream's COMMIT (its process stopped: its TCP stack still takes
// the bytes, nothing answers) holds a stop up for the flush timeout, not for as long as it hangs: the driver's
// Commit takes no context, and waited for ever. Once the target runs again, a restart applies the row once.
func TestStopWhileTheTargetHangsInCommit(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	frozen := make(chan struct{})
	var once atomic.Bool
	r := f.replicator(t, func(c *replication.Config) {
		c.FlushTimeout = 2 * time.Second
		c.Hooks.BeforePositionCommit = func(int) error {
			if !once.CompareAndSwap(false, true) {
				return nil
			}
			if err := f.dst.Freeze(); err != nil {
				return err
			}
			close(frozen)
			return nil // lane 0 now sends its COMMIT to the stopped server
		}
	})
	run := start(t, r, f.start)
	t.Cleanup(func() { _ = f.dst.Thaw() }) // before start's cleanup waits for Run
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	select {
	case <-frozen:
	case <-time.After(time.Minute):
		t.Fatal("the stream never reached its commit")
	}
	run.cancel()
	if err := run.wait(t, time.Minute); err != nil { // on the code before, Run returned only after the thaw
		t.Fatalf("Run, stopped while the target hung in its commit: %v", err)
	}
	if err := f.dst.Thaw(); err != nil {
		t.Fatal(err)
	}
	from, err := gtid.Parse("mariadb", checkpointGTID(t, f))
	if err != nil {
		t.Fatal(err)
	}
	r2 := f.replicator(t, nil)
	run2 := start(t, r2, from)
	f.waitCaughtUp(t, r2, time.Minute)
	if err := run2.stop(t); err != nil {
		t.Fatal(err)
	}
	f.sameRows(t)
	st, err := f.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied.Transactions != 1 || st.Applied.Inserts != 1 {
		t.Fatalf("the checkpoint counts %+v applied, want the one insert once", st.Applied)
	}
}

// ALTER TABLE of another table that swaps the source table's rows (EXCHANGE PARTITION … WITH TABLE) writes no
// row event for them: the stream stops there, as for DDL of the source table itself, rather than go on with a
// target that silently keeps the rows the source no longer holds.
func TestStopsOnExchangePartition(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	f.waitCaughtUp(t, r, time.Minute)
	exec(t, f.srcDB, "CREATE TABLE edxapp.csmh_parts LIKE "+harness.SourceTable)
	exec(t, f.srcDB, "ALTER TABLE edxapp.csmh_parts PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN MAXVALUE)")
	exec(t, f.srcDB, "INSERT INTO edxapp.csmh_parts (id, created, student_module_id) VALUES (100, NOW(6), 7)")
	before := f.executed(t)
	exec(t, f.srcDB, "ALTER TABLE edxapp.csmh_parts EXCHANGE PARTITION p0 WITH TABLE "+harness.SourceTable)
	exchange := f.executed(t).String()
	var ids string
	if err := f.srcDB.QueryRow("SELECT GROUP_CONCAT(id) FROM " + harness.SourceTable).Scan(&ids); err != nil || ids != "100" {
		t.Fatalf("source ids after the exchange %q (%v), want 100", ids, err)
	}
	err := run.wait(t, time.Minute)
	if !isErr(err, replication.ErrDDL) || !strings.Contains(err.Error(), "EXCHANGE PARTITION") || !strings.Contains(err.Error(), "transaction "+exchange+")") {
		t.Fatalf("Run returned %v; want ErrDDL naming the exchange and its transaction %s", err, exchange)
	}
	if got := checkpointGTID(t, f); got != before.String() {
		t.Fatalf("checkpoint %s, want the transaction before the exchange, %s", got, before)
	}
}

// A start position whose binlogs the source purged is refused with the remedy, never skipped.
func TestRefusesPurgedBinlog(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { refusesPurgedBinlog(t, false) })
	t.Run("file position", func(t *testing.T) { refusesPurgedBinlog(t, true) })
}

func refusesPurgedBinlog(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	for i := 1; i <= 20; i++ {
		exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (?, NOW(6), 7)", i)
	}
	harness.PurgeBinlogs(t, f.srcDB)
	r := f.replicator(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.Run(ctx, f.start)
	if !isErr(err, replication.ErrPurged) {
		t.Fatalf("Run returned %v; want ErrPurged", err)
	}
	for _, s := range []string{"purged binlogs the checkpoint needs", "start over", "csmh_sync_state", "csmh_sync_backfill", "delete the copied rows", "retention"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not mention %q", err, s)
		}
	}
	if got := checkpointGTID(t, f); got != f.start.String() {
		t.Fatalf("checkpoint moved to %s", got)
	}
}

// A source row in the app's id range stops the stream after committing what came before it.
func TestIDGuard(t *testing.T) {
	f := newFixture(t, fixtureOptions{idBoundary: 1000})
	r := f.replicator(t, func(c *replication.Config) { c.IDBoundary = 1000 })
	run := start(t, r, f.start)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (5, NOW(6), 7)")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (999, NOW(6), 7)")
	before := f.executed(t)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1500, NOW(6), 7)")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (6, NOW(6), 7)")
	err := run.wait(t, time.Minute)
	if !isErr(err, replication.ErrIDCollision) || !strings.Contains(err.Error(), "1500") || !strings.Contains(err.Error(), "1000") {
		t.Fatalf("Run returned %v; want ErrIDCollision naming id 1500 and boundary 1000", err)
	}
	if got := checkpointGTID(t, f); got != before.String() {
		t.Fatalf("checkpoint %s, want the transaction before the collision, %s", got, before)
	}
	var ids string
	if err := f.dstDB.QueryRow("SELECT GROUP_CONCAT(id ORDER BY id) FROM " + harness.TargetTable).Scan(&ids); err != nil || ids != "5,999" {
		t.Fatalf("target ids %q (%v), want 5,999", ids, err)
	}
}

// With a unique key besides the primary key on the target, changes are applied as DELETE + INSERT, so a
// row that collides on the other key fails the stream loudly instead of overwriting another row.
func TestUniqueKeyOnTargetFailsLoudly(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	exec(t, f.dstDB, "ALTER TABLE "+harness.TargetTable+" ADD UNIQUE KEY sm_created (student_module_id, created)")
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	rnd := rand.New(rand.NewSource(7))
	for i := 1; i <= 50; i++ {
		exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, state, student_module_id) VALUES (?, '2020-01-01', ?, ?)", i, "s", i)
	}
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET state = ? WHERE id <= 25", rnd.Int())
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET state = 'twice' WHERE id = 3")
	f.waitCaughtUp(t, r, time.Minute)
	f.sameRows(t)
	// Id 51 has the same (student_module_id, created) as id 1.
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, state, student_module_id) VALUES (51, '2020-01-01', 'dup', 1)")
	err := run.wait(t, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "1062") {
		t.Fatalf("Run returned %v; want the duplicate-key error", err)
	}
	var state string
	if err := f.dstDB.QueryRow("SELECT state FROM " + harness.TargetTable + " WHERE id = 1").Scan(&state); err != nil || state == "dup" {
		t.Fatalf("id 1 on the target: %q (%v); it must not be overwritten", state, err)
	}
}

// Parallel apply, cut short: the other lanes of a batch commit, lane 0 (rows and position) does not. The next
// session must skip exactly what those lanes applied — also when the process restarts with another lane
// count. A BEFORE INSERT trigger on the target counts every upsert of each id, so an insert applied twice
// shows as 2 and an update applied twice as 3.
func TestParallelApplyExactlyOnceAfterLaneZeroFails(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart int // lanes of a second process started after the first failure; 0 = the same process retries
		file    bool
	}{{"same process retries", 0, false}, {"restart with fewer lanes", 2, false},
		{"file position, restart with fewer lanes", 2, true}} {
		t.Run(tc.name, func(t *testing.T) { parallelApplyCutShort(t, tc.restart, tc.file) })
	}
}

func parallelApplyCutShort(t *testing.T, restartLanes int, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	countApplies(t, f)
	gen, updated := generateAndUpdate(t, f)

	var calls, failed int
	firstFailed := make(chan struct{})
	hook := func(lanes int) error {
		if lanes < 2 {
			return nil
		}
		calls++
		if calls == 2 || calls == 4 {
			failed++
			if failed == 1 {
				close(firstFailed)
			}
			return errors.New("injected: lane 0 lost before its commit")
		}
		return nil
	}
	r := f.replicator(t, func(c *replication.Config) {
		c.BatchRows, c.ApplyLanes = 1000, 3
		c.Hooks.BeforePositionCommit = hook
	})
	run := start(t, r, f.start)
	if restartLanes > 0 {
		select {
		case <-firstFailed:
		case <-time.After(time.Minute):
			t.Fatal("no batch was split over lanes")
		}
		if err := run.stop(t); err != nil {
			t.Fatalf("first Run: %v", err)
		}
		var ahead int
		if err := f.dstDB.QueryRow("SELECT COUNT(*) FROM edxapp_csmh.csmh_sync_lanes WHERE lanes = 3").Scan(&ahead); err != nil || ahead == 0 {
			t.Fatalf("no lane rows of the first process (%v)", err)
		}
		r = f.replicator(t, func(c *replication.Config) {
			c.BatchRows, c.ApplyLanes = 1000, restartLanes
			c.Hooks.BeforePositionCommit = hook
		})
		run = start(t, r, mustParse(t, checkpointGTID(t, f)))
	}
	want := f.waitCaughtUp(t, r, 2*time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if failed != 2 {
		t.Fatalf("lane 0 was failed %d times after the other lanes committed, want 2 (batches were not split?)", failed)
	}
	requireAppliedOnce(t, f, gen.Rows, updated, want.String())
}

// A source transaction larger than the fragment size reaches the target in parts, never whole in memory, inside
// one target transaction: a failure after some parts were written leaves nothing of it behind, and the retry
// applies it whole, exactly once.
func TestLargeTransactionInParts(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { largeTransactionInParts(t, false) })
	t.Run("file position", func(t *testing.T) { largeTransactionInParts(t, true) })
}

func largeTransactionInParts(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	ctx := context.Background()
	const fragment = 256 << 10
	var parts []int
	var failed atomic.Bool
	var r *replication.Replicator
	var lagZero atomic.Int32 // parts applied while the lag read 0: the transaction is not applied yet
	r = f.replicator(t, func(c *replication.Config) {
		c.FragmentBytes = fragment
		c.Hooks.FragmentApplied = func(_ string, bytes int) error {
			if r.Lag() <= 0 {
				lagZero.Add(1)
			}
			parts = append(parts, bytes)
			if len(parts) == 3 && failed.CompareAndSwap(false, true) {
				return errors.New("injected: target lost after the third part")
			}
			return nil
		}
	})
	run := start(t, r, f.start)
	tx, err := f.srcDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 { // 40 rows of 64 KiB: 2.5 MiB in one transaction, about ten parts
		if _, err := tx.Exec("INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), REPEAT(?, 65536), ?)",
			string(rune('a'+i%26)), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET grade = 1, state = CONCAT(state, 'x')")
	exec(t, f.srcDB, "DELETE FROM "+harness.SourceTable+" WHERE id % 2 = 0")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), 'small', 99)")
	want := f.waitCaughtUp(t, r, 2*time.Minute)
	f.sameRows(t)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !failed.Load() {
		t.Fatal("the injected failure never ran: no large transaction was split")
	}
	if n := lagZero.Load(); n > 0 {
		t.Fatalf("the lag read 0 while %d parts of a transaction not yet applied were being written", n)
	}
	if len(parts) < 20 {
		t.Fatalf("%d parts for two transactions of 2.5 MiB in parts of 256 KiB: %v", len(parts), parts)
	}
	for _, p := range parts {
		if p > fragment+(70<<10) { // a part closes at the first rows event that crosses the size
			t.Fatalf("a part of %d bytes, over the %d-byte fragment size plus one row", p, fragment)
		}
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	txs := f.gtidAt(t, f.start).Behind(f.gtidAt(t, want))
	if withoutCreated(st.GTID) != want.String() || st.Applied.Inserts != 41 || st.Applied.Updates != 40 || st.Applied.Deletes != 20 ||
		st.Applied.Transactions != uint64(txs) {
		t.Fatalf("checkpoint %s, counters %+v; want %s, 41 inserts, 40 updates, 20 deletes, %d transactions, each counted once",
			st.GTID, st.Applied, want, txs)
	}
}

// While the stream keeps up with a steady load, the lag reads the apply delay (the batch delay and a
// commit: milliseconds), not the fraction of a second the binlog's whole-second timestamps leave out.
func TestLagWhileKeepingUp(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	load, err := harness.NewLoadGen(f.srcDB, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 50, Conns: 2, MaxOps: 200, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(context.Background()) }()
	var pending []time.Duration // lag samples taken while a transaction was waiting to be applied
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
sample:
	for {
		select {
		case err := <-loadDone:
			if err != nil {
				t.Fatal(err)
			}
			break sample
		case <-tick.C:
			if lag := r.Lag(); lag > 0 {
				pending = append(pending, lag)
			}
		}
	}
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(pending) < 20 {
		t.Fatalf("only %d samples caught a transaction pending", len(pending))
	}
	slices.Sort(pending)
	median := pending[len(pending)/2]
	t.Logf("%d samples while pending: median %s, max %s", len(pending), median, pending[len(pending)-1])
	if median > 300*time.Millisecond {
		t.Fatalf("median lag %s while the stream keeps up, want the apply delay (well under 300 ms)", median)
	}
}
