package backfill_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// At innodb_autoinc_lock_mode 1 (MariaDB's and MySQL 5.7's default) a chunk that waits for a row lock of the
// app's must not hold CSMHE's AUTO-INC lock meanwhile: the app's inserts into CSMHE (every graded submission
// with ENABLE_CSMH_EXTENDED) would wait for the chunk. The chunk is parked on a lock the test holds — a CSMH row
// an app transaction is updating (same server), or a CSMHE row a stream lane is writing (across servers) —
// and an app INSERT into CSMHE must complete while the chunk is still open.
//
// At lock mode 0 (traditional) every INSERT holds the AUTO-INC lock, multi-row INSERT … VALUES too: the
// cross-server INSERT path is parked the same way there.
func TestAppInsertsWhileChunkWaits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		same   bool
		mode   int
		method string
	}{{"same server", true, 1, ""}, {"cross server", false, 1, ""}, {"cross server, INSERT, lock mode 0", false, 0, backfill.WriteInsert}} {
		t.Run(tc.name, func(t *testing.T) { appInsertsWhileChunkWaits(t, tc.same, tc.mode, tc.method) })
	}
}

func appInsertsWhileChunkWaits(t *testing.T, same bool, wantMode int, method string) {
	var dstArgs []string
	if wantMode != 1 {
		dstArgs = append(dstArgs, fmt.Sprintf("--innodb-autoinc-lock-mode=%d", wantMode))
	}
	e := setup(t, same, harness.GenOptions{Rows: 3000, Seed: 41, LargeStateEvery: -1}, dstArgs...)
	ctx := ctxT(t, 3*time.Minute)
	var mode int
	if err := e.dst.QueryRow("SELECT @@innodb_autoinc_lock_mode").Scan(&mode); err != nil || mode != wantMode {
		t.Fatalf("target innodb_autoinc_lock_mode %d (%v), want %d", mode, err, wantMode)
	}
	if _, err := e.dst.Exec("ALTER TABLE "+harness.TargetTable+" AUTO_INCREMENT = ?", e.gen.MaxID+10000); err != nil {
		t.Fatal(err)
	}
	// The lock the chunk will wait for, taken before the backfill starts: an uncommitted change of id MinID+10.
	held := e.src
	q := "UPDATE " + harness.SourceTable + " SET grade = grade WHERE id = ?"
	if !same {
		held, q = e.dst, "INSERT INTO "+harness.TargetTable+" (id, created, student_module_id) VALUES (?, UTC_TIMESTAMP(6), 1)"
	}
	lockConn, err := held.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := lockConn.ExecContext(ctx, q, e.gen.MinID+10); err != nil {
		t.Fatal(err)
	}

	// One worker: the backfill's default choice for a single worker across servers used to be LOAD DATA. The
	// chunk deadline is out of the way: the chunk must stay parked while the app's INSERT is timed.
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkDeadline: time.Minute, WriteMethod: method})
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	harness.Eventually(t, time.Minute, "the backfill's chunk waiting for the held row lock", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("the backfill ended before its chunk waited: %v", err)
		default:
		}
		n, err := parked(held)
		return n > 0, err
	})

	app, cancel := context.WithTimeout(ctx, 2*time.Second) // the tool's own lock wait timeout is 5 s
	defer cancel()
	start := time.Now()
	_, err = e.dst.ExecContext(app, "INSERT INTO "+harness.TargetTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), '{}', 7)")
	took := time.Since(start)
	waiting, qerr := parked(held)
	if qerr != nil {
		t.Fatal(qerr)
	}
	if err != nil {
		t.Fatalf("the app's INSERT into CSMHE did not complete while the chunk waited (%s): %v", took.Round(time.Millisecond), err)
	}
	if waiting == 0 {
		t.Fatal("the chunk stopped waiting before the app's INSERT was checked: the test proved nothing")
	}
	t.Logf("app INSERT took %s while the chunk waited", took.Round(time.Microsecond))

	if _, err := lockConn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var copied int64
	if err := e.dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id <= ?", e.gen.MaxID).Scan(&copied); err != nil {
		t.Fatal(err)
	}
	if copied != e.gen.Rows {
		t.Fatalf("copied %d rows, want %d", copied, e.gen.Rows)
	}
}

// parked counts the backfill's chunk statements that have been running for a second or more: waiting for the
// held lock (the tool's lock wait timeout is 5 s; the chunk itself takes milliseconds).
func parked(db *sql.DB) (int, error) {
	var n int
	err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE TIME >= 1 AND COMMAND = 'Query'
		AND (INFO LIKE 'SELECT %LOCK IN SHARE MODE' OR INFO LIKE 'INSERT IGNORE%' OR INFO LIKE 'LOAD DATA%')`).Scan(&n)
	return n, err
}

// A chunk whose target write hangs — here on a CSMHE row lock the test holds, longer than the tool's lock
// wait of 5 s — keeps its source rows locked no longer than the chunk deadline: an app UPDATE of one of them,
// queued behind the chunk's shared lock, completes within the deadline, and the copy is exact once the target
// moves again.
func TestChunkDeadlineFreesSourceRows(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 3000, Seed: 43, LargeStateEvery: -1})
	ctx := ctxT(t, 3*time.Minute)
	// 4 s, under the tool's 5 s lock wait: time for the test to see the chunk parked and start the UPDATE before the deadline
	// frees the rows, on a loaded machine under -race (at 2 s the UPDATE once began after the rows were freed).
	const deadline = 4 * time.Second
	lockConn, err := e.dst.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := lockConn.ExecContext(ctx, "INSERT INTO "+harness.TargetTable+
		" (id, created, student_module_id) VALUES (?, UTC_TIMESTAMP(6), 1)", e.gen.MinID+10); err != nil {
		t.Fatal(err)
	}
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkDeadline: deadline})
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	// Parked on the target means the chunk's rows are read, and locked on the source.
	harness.Eventually(t, time.Minute, "the chunk's target write waiting for the held row", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("the backfill ended before its chunk waited: %v", err)
		default:
		}
		var n int
		err := e.dst.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query'
			AND (INFO LIKE 'SELECT %LOCK IN SHARE MODE' OR INFO LIKE 'INSERT IGNORE%' OR INFO LIKE 'LOAD DATA%')`).Scan(&n)
		return n > 0, err
	})

	app, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	updated := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := e.src.ExecContext(app, "UPDATE "+harness.SourceTable+" SET grade = 0.5 WHERE id = ?", e.gen.MinID+5)
		updated <- err
	}()
	waited := false
	var took time.Duration
	harness.Eventually(t, 30*time.Second, "the app's UPDATE", func() (bool, error) {
		select {
		case err := <-updated:
			took = time.Since(start)
			return true, err
		default:
		}
		// PROCESSLIST, not INNODB_TRX: InnoDB refreshes INNODB_TRX only when it has not been read for 0.1 s, so
		// polls every 25 ms keep showing the snapshot taken before the UPDATE began to wait. A primary-key UPDATE
		// running for half a second on this idle server is waiting for the chunk's lock.
		var n int
		err := e.src.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE TIME_MS >= 500
			AND INFO LIKE 'UPDATE %'`).Scan(&n)
		waited = waited || n > 0
		return false, err
	})
	if !waited {
		t.Fatalf("the app's UPDATE never waited for the chunk's lock (it took %s): the test proved nothing", took)
	}
	if limit := deadline + 1500*time.Millisecond; took > limit {
		t.Fatalf("the app's UPDATE of a chunk row took %s, beyond the chunk deadline %s (limit %s)", took.Round(time.Millisecond), deadline, limit)
	}
	t.Logf("app UPDATE waited %s for the chunk (deadline %s)", took.Round(time.Millisecond), deadline)

	if _, err := lockConn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := metricValue(t, e.m.ChunkDeadlines); n < 1 {
		t.Fatalf("csmh_sync_backfill_chunk_deadlines_total %v, want at least 1", n)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}

// A row too large to cross and be written within the chunk deadline is still copied, and its lock stays
// bounded: a chunk of its one id has its deadline lengthened by the row's size at 1 MiB/s, and by no more.
// The write of the chunk of that id alone is held (a hook) for a while that is above the deadline and within
// the lengthened one, then for a while above both. Chunks of more ids that hold the row are held just past
// the deadline, so they are cut off and shrink until the row stands alone.
func TestFatRowOutlivesTheDeadline(t *testing.T) {
	const (
		deadline = time.Second
		fat      = 4 << 20 // its chunk's deadline: 1 s + 4 s
	)
	for _, tc := range []struct {
		name   string
		hold   time.Duration
		copied bool
	}{{"held within its size", 2500 * time.Millisecond, true}, {"held beyond its size", 8 * time.Second, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, false, harness.GenOptions{Rows: 600, Seed: 47, LargeStateEvery: -1})
			fatID := uint64(e.gen.MinID) + 300
			if _, err := e.src.Exec("UPDATE "+harness.SourceTable+" SET state = REPEAT('x', ?) WHERE id = ?", fat, fatID); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(ctxT(t, 3*time.Minute))
			defer cancel()
			var mu sync.Mutex
			alone := 0 // hook calls for a chunk of the fat row's id alone
			b := e.backfill(t, backfill.Config{Workers: 1, ChunkDeadline: deadline, Hooks: backfill.Hooks{
				BeforeChunkCommit: func(_ int, lo, hi uint64) {
					if lo > fatID || hi < fatID {
						return
					}
					if lo != hi {
						time.Sleep(deadline + 300*time.Millisecond) // a slow write: past the deadline
						return
					}
					mu.Lock()
					alone++
					if alone == 2 && !tc.copied {
						cancel() // the first chunk of the row alone was cut off, or it would not be read again
					}
					mu.Unlock()
					time.Sleep(tc.hold)
				}}})
			err := b.Run(ctx)
			mu.Lock()
			n := alone
			mu.Unlock()
			if tc.copied {
				if err != nil {
					t.Fatal(err)
				}
				if n != 1 {
					t.Fatalf("the chunk of the fat row alone was written %d times, want once", n)
				}
				e.requireEqual(t)
				e.requireCounted(t, e.gen.Rows)
				return
			}
			if n < 2 {
				t.Fatalf("backfill ended with %v after %d chunks of the fat row alone: want it cut off and read again", err, n)
			}
			var have int
			if err := e.dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id = ?", fatID).Scan(&have); err != nil {
				t.Fatal(err)
			}
			if have != 0 {
				t.Fatal("the fat row reached the target although its chunk outlived the lengthened deadline")
			}
		})
	}
}

// A chunk whose locking read waits for a row the app holds (y) frees the rows it has locked already (x) at
// the chunk deadline, on the source server too: the driver only closes its socket there, and the server would
// keep the read's locks until its lock wait ended (innodb_lock_wait_timeout, 5 s). The app's UPDATE of x waits
// for the deadline, not the lock wait; once the app lets y go, the copy is exact.
func TestChunkReadWaitingForTheAppFreesRowsAtTheDeadline(t *testing.T) {
	t.Run("cross server", func(t *testing.T) { chunkReadWaitingForTheApp(t, false) })
	t.Run("same server", func(t *testing.T) { chunkReadWaitingForTheApp(t, true) })
}

func chunkReadWaitingForTheApp(t *testing.T, sameServer bool) {
	e := setup(t, sameServer, harness.GenOptions{Rows: 3000, Seed: 47, LargeStateEvery: -1})
	ctx := ctxT(t, 3*time.Minute)
	const deadline = 2 * time.Second // under the tool's 5 s lock wait
	var x, y int64
	if err := e.src.QueryRowContext(ctx, "SELECT MIN(id) + 5, MIN(id) + 40 FROM "+harness.SourceTable).Scan(&x, &y); err != nil {
		t.Fatal(err)
	}
	app, err := e.src.BeginTx(ctx, nil) // the app holds source row y
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback()
	if _, err := app.ExecContext(ctx, "SELECT id FROM "+harness.SourceTable+" WHERE id = ? FOR UPDATE", y); err != nil {
		t.Fatal(err)
	}
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkDeadline: deadline})
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	// The chunk's read has locked x and waits for y: a NOWAIT lock of x fails.
	harness.Eventually(t, time.Minute, "the chunk's read holding x while it waits for the app's row", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("the backfill ended before its read waited for the app's row: %v", err)
		default:
		}
		return harness.RowLocked(e.src, harness.SourceTable, x)
	})
	start := time.Now()
	if _, err := e.src.ExecContext(ctx, "UPDATE "+harness.SourceTable+" SET grade = 0.25 WHERE id = ?", x); err != nil { // the app
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("the app's UPDATE of a row the chunk had locked waited %s (deadline %s)", took.Round(time.Millisecond), deadline)
	if limit := deadline + 1500*time.Millisecond; took > limit {
		t.Fatalf("the app's UPDATE waited %s for the chunk, beyond the chunk deadline %s (limit %s)", took.Round(time.Millisecond), deadline, limit)
	}
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}
