package backfill_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A split is a checkpoint write like a chunk's and meets the same transient failures: here the busy segment's
// row stays locked past innodb_lock_wait_timeout (as behind a target commit that stalls), so the idle worker's
// split fails with a lock wait timeout. Like a chunk, it is retried: the backfill goes on and copies every row.
func TestSplitRetriesTransientFailure(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 30_000, Seed: 62})
	if _, err := e.src.Exec("INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES (2000000000, UTC_TIMESTAMP(6), '{}', 1)"); err != nil {
		t.Fatal(err)
	}
	rows := e.gen.Rows + 1
	ctx := ctxT(t, 5*time.Minute)
	var once sync.Once
	waited := make(chan error, 1)
	b := e.backfill(t, backfill.Config{Workers: 2, ChunkTime: 20 * time.Millisecond, Hooks: backfill.Hooks{
		AfterChunkCopied: func(segment int, next uint64) {
			if segment != 0 {
				return
			}
			once.Do(func() { waited <- holdSegmentRow(ctx, e, 0) })
		}}})
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, rows)
}

// holdSegmentRow locks segment's checkpoint row until a split's UPDATE of it has waited for the lock and
// given up.
func holdSegmentRow(ctx context.Context, e *env, segment int) error {
	tx, err := e.dst.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT * FROM edxapp_csmh.csmh_sync_backfill WHERE segment = ? FOR UPDATE", segment); err != nil {
		return err
	}
	waiting := func() (bool, error) {
		var n int
		err := e.dst.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
			WHERE INFO LIKE 'UPDATE %csmh_sync_backfill%SET end_id%'`).Scan(&n)
		return n > 0, err
	}
	// Polled here, not with harness.Eventually: this runs on a worker's goroutine, where a test may not fail.
	for _, want := range []bool{true, false} { // a split waits for the lock, then gives up
		for deadline := time.Now().Add(time.Minute); ; {
			w, err := waiting()
			if err != nil {
				return err
			}
			if w == want {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no split waited for segment %d's row and gave up within a minute", segment)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}
