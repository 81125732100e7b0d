package backfill_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// Test 6: production writes during the copy. A row deleted before its chunk is read is not copied; a delete
// of a row in a chunk being copied waits for the chunk's target commit instead of failing; the app's load
// sees no errors.
func TestConcurrentWritesWaitForChunk(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 20000, Seed: 16, LargeStateEvery: -1})
	ctx := ctxT(t, 5*time.Minute)
	app, err := e.srcS.Open("") // an app connection: default (long) lock wait
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	load, err := harness.NewLoadGen(app, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 400, Conns: 8,
		InsertWeight: 0.2, UpdateWeight: 0.5, DeleteWeight: 0.3, MinID: e.gen.MinID, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(lctx) }()
	t.Cleanup(func() { stopLoad(); <-loadDone })

	var (
		once, probeOnce sync.Once
		deletedAhead    []int64
		probeID         int64
		probeErr        = make(chan error, 1)
		hookErr         atomic.Value
		commits         atomic.Int64
	)
	fail := func(err error) { hookErr.CompareAndSwap(nil, err) }
	hooks := backfill.Hooks{
		// After the first chunk, delete the last rows of the range: their chunks have not been read yet.
		AfterChunkCopied: func(int, uint64) {
			once.Do(func() {
				rows, err := app.QueryContext(ctx, "SELECT id FROM "+harness.SourceTable+" WHERE id <= ? ORDER BY id DESC LIMIT 20", e.gen.MaxID)
				if err != nil {
					fail(err)
					return
				}
				for rows.Next() {
					var id int64
					rows.Scan(&id)
					deletedAhead = append(deletedAhead, id)
				}
				rows.Close()
				for _, id := range deletedAhead {
					if _, err := app.ExecContext(ctx, "DELETE FROM "+harness.SourceTable+" WHERE id = ?", id); err != nil {
						fail(err)
					}
				}
			})
		},
		// In the third chunk, with its rows written to the target but not committed, delete one of its rows:
		// the delete must wait on the chunk's shared lock, and complete after the commit.
		BeforeChunkCommit: func(_ int, lo, hi uint64) {
			if commits.Add(1) != 3 {
				return
			}
			probeOnce.Do(func() {
				// A plain read sees the committed source row the chunk holds a shared lock on.
				if err := e.src.QueryRowContext(ctx, "SELECT id FROM "+harness.SourceTable+" WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1", lo, hi).Scan(&probeID); err != nil {
					fail(fmt.Errorf("no row in chunk %d-%d: %w", lo, hi, err))
					return
				}
				conn, err := app.Conn(ctx)
				if err != nil {
					fail(err)
					return
				}
				var connID int64
				if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&connID); err != nil {
					fail(err)
					return
				}
				go func() {
					defer conn.Close()
					_, err := conn.ExecContext(ctx, "DELETE FROM "+harness.SourceTable+" WHERE id = ?", probeID)
					probeErr <- err
				}()
				deadline := time.Now().Add(20 * time.Second)
				for {
					// Waiting: InnoDB lists it in LOCK WAIT, or (before its transaction is registered there) the
					// one-row delete by primary key has been executing for a long time.
					var state string
					var ms float64
					err := e.src.QueryRowContext(ctx, `SELECT IFNULL((SELECT trx_state FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = p.ID), ''),
						p.TIME_MS FROM information_schema.PROCESSLIST p WHERE p.ID = ? AND p.INFO LIKE 'DELETE%'`, connID).Scan(&state, &ms)
					if err == nil && (state == "LOCK WAIT" || ms > 500) {
						return
					}
					select {
					case err := <-probeErr:
						fail(fmt.Errorf("the delete of locked row %d (chunk %d-%d) did not wait for the chunk (err %v)", probeID, lo, hi, err))
						return
					default:
					}
					if time.Now().After(deadline) {
						var cmd, pstate, info string
						perr := e.src.QueryRowContext(ctx, "SELECT COMMAND, IFNULL(STATE, ''), IFNULL(INFO, '') FROM information_schema.PROCESSLIST WHERE ID = ?", connID).Scan(&cmd, &pstate, &info)
						fail(fmt.Errorf("the delete of row %d (chunk %d-%d) never waited on a lock (state %q, %v; thread %s %s %s %v)", probeID, lo, hi, state, err, cmd, pstate, info, perr))
						return
					}
					time.Sleep(10 * time.Millisecond) // polling the server's lock table, with a deadline
				}
			})
		},
	}
	b := e.backfill(t, backfill.Config{Workers: 2, MaxRowsPerSecond: 5000, Hooks: hooks})
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	stopLoad()
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	loadDone <- nil // for the cleanup
	if err, _ := hookErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-probeErr:
		if err != nil {
			t.Fatalf("the waiting delete failed: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting delete never finished")
	}
	st := load.Stats()
	if st.Errors != 0 || st.Deletes == 0 || st.Updates == 0 {
		t.Fatalf("load %+v, last error %v", st, load.LastError())
	}
	if len(deletedAhead) != 20 {
		t.Fatalf("deleted %d rows ahead of the copy", len(deletedAhead))
	}
	for _, id := range deletedAhead {
		var n int
		if err := e.dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id = ?", id).Scan(&n); err != nil || n != 0 {
			t.Fatalf("row %d deleted before its chunk was read is in the target (%v)", id, err)
		}
	}
	// The probe row was copied before its delete could commit: removing it is the binlog stream's job.
	var inTarget, inSource int
	e.dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id = ?", probeID).Scan(&inTarget)
	e.src.QueryRow("SELECT COUNT(*) FROM "+harness.SourceTable+" WHERE id = ?", probeID).Scan(&inSource)
	if inTarget != 1 || inSource != 0 {
		t.Fatalf("probe row %d: %d in the target, %d in the source; want 1 and 0", probeID, inTarget, inSource)
	}
	var maxID, end int64
	if err := e.dst.QueryRow("SELECT (SELECT MAX(id) FROM "+harness.TargetTable+"), (SELECT MAX(end_id) FROM edxapp_csmh.csmh_sync_backfill)").Scan(&maxID, &end); err != nil || maxID > end {
		t.Fatalf("target max id %d above the captured range end %d (%v): rows inserted later are the stream's", maxID, end, err)
	}
	e.requireCounted(t, count(t, e.dst, harness.TargetTable))
}
