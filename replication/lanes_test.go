package replication_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A batch that deletes rows the target does not hold yet (the backfill has not reached them) in one lane
// and writes rows into the same id gap in another must not stall: lanes touch disjoint ids and must never
// wait on each other's locks. The hooks make lane 1 apply only after lane 0 applied its share, on every
// attempt, which is the order that stalls when lane 0 holds gap locks (REPEATABLE READ).
func TestLanesNeverWaitOnEachOther(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	// Rows the source held before the stream's start and the target never received.
	conn, err := f.srcDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%.100s: %v", q, err)
		}
	}
	exec("SET SESSION sql_log_bin = 0")
	exec("INSERT INTO " + harness.SourceTable + " (id, version, created, state, grade, max_grade, student_module_id) " +
		"SELECT seq, 'v1', '2020-01-02 03:04:05.000006', '{\"attempts\": 1}', 1, 1, seq FROM mysql.seq_1_to_4096")
	exec("SET SESSION sql_log_bin = 1")
	conn.Close()

	lane0Applied := make(chan struct{}, 64)
	var split atomic.Int32
	r := f.replicator(t, func(c *replication.Config) {
		c.BatchRows, c.ApplyLanes = 10_000, 2
		c.Hooks.LaneApplied = func(lane int) {
			if lane == 0 {
				select {
				case lane0Applied <- struct{}{}:
				default:
				}
			}
		}
		c.Hooks.BeforeLaneApply = func(lane int) {
			if lane != 1 {
				return
			}
			split.Add(1)
			select {
			case <-lane0Applied:
			case <-time.After(30 * time.Second): // a deadline only: lane 0 failed before applying
			}
		}
	})
	run := start(t, r, f.start)
	// Ids in blocks 256·2k… go to lane 0, 256·(2k+1)… to lane 1. Lane 0 deletes ids the target lacks; lane 1
	// upserts (inserts, on the target) the rows between them.
	tx, err := f.srcDB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DELETE FROM " + harness.SourceTable + " WHERE id DIV 256 % 2 = 0 AND id >= 256",
		"UPDATE " + harness.SourceTable + " SET grade = 2 WHERE id DIV 256 % 2 = 1",
	} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if split.Load() == 0 {
		t.Fatal("the batch was not split over lanes")
	}
	var rows, wrong int
	if err := f.dstDB.QueryRow("SELECT COUNT(*), COALESCE(SUM(grade <> 2 OR id DIV 256 % 2 = 0), 0) FROM "+dstTable.Quoted()).Scan(&rows, &wrong); err != nil {
		t.Fatal(err)
	}
	if rows != 2048 || wrong != 0 {
		t.Fatalf("target holds %d rows (%d wrong), want the 2048 updated rows", rows, wrong)
	}
}

// A batch whose commit succeeded while its acknowledgement was lost (the target restarted at that moment)
// must not be applied again by the next session, with one lane or several.
func TestLostCommitAcknowledgementIsNotReapplied(t *testing.T) {
	for _, lanes := range []int{1, 3} {
		t.Run(map[int]string{1: "one lane", 3: "three lanes"}[lanes], func(t *testing.T) {
			f := newFixture(t, fixtureOptions{})
			countApplies(t, f)
			gen, updated := generateAndUpdate(t, f)
			var calls, lost int
			r := f.replicator(t, func(c *replication.Config) {
				c.BatchRows, c.ApplyLanes = 1000, lanes
				c.Hooks.AfterPositionCommit = func() error {
					calls++
					if calls == 2 || calls == 4 {
						lost++
						return errors.New("injected: commit acknowledgement lost")
					}
					return nil
				}
			})
			run := start(t, r, f.start)
			want := f.waitCaughtUp(t, r, 2*time.Minute)
			if err := run.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if lost != 2 {
				t.Fatalf("%d acknowledgements were lost, want 2", lost)
			}
			requireAppliedOnce(t, f, gen.Rows, updated, want.String())
		})
	}
}

// countApplies installs a trigger on the target that counts every insert or upsert per id.
func countApplies(t *testing.T, f *fixture) {
	t.Helper()
	exec(t, f.dstDB, "CREATE TABLE edxapp_csmh.apply_count (id bigint unsigned PRIMARY KEY, n int NOT NULL)")
	exec(t, f.dstDB, "CREATE TRIGGER edxapp_csmh.count_applies BEFORE INSERT ON "+dstTable.Quoted()+
		" FOR EACH ROW INSERT INTO edxapp_csmh.apply_count VALUES (NEW.id, 1) ON DUPLICATE KEY UPDATE n = n + 1")
}

// generateAndUpdate writes 5,000 rows in transactions of 100, then updates every fifth row.
func generateAndUpdate(t *testing.T, f *fixture) (harness.GenResult, uint64) {
	t.Helper()
	gen, err := harness.GenerateCSMH(context.Background(), f.srcDB, harness.SourceTable, harness.GenOptions{Rows: 5000, Seed: 5, BatchRows: 100, LargeStateEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	exec(t, f.srcDB, "UPDATE "+harness.SourceTable+" SET grade = COALESCE(grade, 0) + 1 WHERE id % 5 = 0")
	var updated uint64
	if err := f.srcDB.QueryRow("SELECT COUNT(*) FROM " + harness.SourceTable + " WHERE id % 5 = 0").Scan(&updated); err != nil {
		t.Fatal(err)
	}
	return gen, updated
}

// requireAppliedOnce checks that every row arrived, each insert and update was applied exactly once, and
// the checkpoint's position and counters say so.
func requireAppliedOnce(t *testing.T, f *fixture, rows int64, updated uint64, pos string) {
	t.Helper()
	if n := f.sameRows(t); int64(n) != rows {
		t.Fatalf("target has %d rows, want %d", n, rows)
	}
	var twice, missing int
	if err := f.dstDB.QueryRow(`SELECT COALESCE(SUM(n <> IF(id % 5 = 0, 2, 1)), 0), ? - COUNT(*) FROM edxapp_csmh.apply_count`,
		rows).Scan(&twice, &missing); err != nil {
		t.Fatal(err)
	}
	if twice != 0 || missing != 0 {
		t.Fatalf("%d ids were applied a wrong number of times, %d never", twice, missing)
	}
	st, err := f.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if withoutCreated(st.GTID) != pos || st.Applied.Inserts != uint64(rows) || st.Applied.Updates != updated {
		t.Fatalf("checkpoint %s %+v, want %s with %d inserts and %d updates", st.GTID, st.Applied, pos, rows, updated)
	}
}

// A process killed just after sending COMMIT leaves that commit running in the server, and the next process
// can be connected before it ends. Here the first replicator's second batch is held between its checkpoint
// write and its commit while a second replicator starts from the checkpoint it can read (the first batch's):
// the second one must wait for that commit and resume after it, and nothing is applied twice.
func TestCommitInFlightIsNotReapplied(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	countApplies(t, f)
	gen, updated := generateAndUpdate(t, f)
	held, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	r1 := f.replicator(t, func(c *replication.Config) {
		c.BatchRows, c.ApplyLanes = 1000, 1
		c.Hooks.BeforePositionCommit = func(int) error {
			switch n := calls.Add(1); {
			case n == 2:
				close(held)
				<-release // then commit: the commit that outlives its process
			case n > 2:
				return errors.New("injected: the process is gone")
			}
			return nil
		}
	})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	run1 := start(t, r1, f.start)
	t.Cleanup(releaseOnce) // cleanups run last-in first-out: release before the runs are stopped
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("the second batch never reached its commit")
	}
	st, err := f.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r2 := f.replicator(t, func(c *replication.Config) { c.BatchRows, c.ApplyLanes = 1000, 1 })
	run2 := start(t, r2, mustParse(t, st.GTID))
	t.Cleanup(releaseOnce)
	// The second replicator's session waits on the state row the commit in flight holds.
	harness.Eventually(t, 30*time.Second, "the new session waiting for the commit in flight (not reading the checkpoint from before it)", func() (bool, error) {
		var waiting int
		err := f.dstDB.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT gtid_set FROM % FOR UPDATE'").Scan(&waiting)
		return waiting > 0, err
	})
	run1.cancel()
	releaseOnce()
	if err := run1.wait(t, time.Minute); err != nil && !strings.Contains(err.Error(), "the process is gone") {
		t.Fatalf("first Run: %v", err)
	}
	want := f.waitCaughtUp(t, r2, 2*time.Minute)
	if err := run2.stop(t); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	requireAppliedOnce(t, f, gen.Rows, updated, want.String())
}
