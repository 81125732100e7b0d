package backfill_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// epochFence is the migration lock as the checkpoint sees it: an epoch that another process's turn moves on.
type epochFence struct{ n atomic.Uint64 }

func (f *epochFence) Epoch() uint64 { return f.n.Load() }

func (f *epochFence) Check(_ context.Context, _ checkpoint.Execer, epoch uint64) error {
	if epoch != f.n.Load() {
		return checkpoint.ErrFenced
	}
	return nil
}

// A split names its new segment after the segments the process knows. While this process had lost the
// migration lock, another one held it and split a segment; this one has the lock again (a new epoch). Its
// workers' writes are fenced until they read their segments again; so must its next split be: before, the
// split took the new epoch as it was, added its segment under the number the other process had used, and the
// copy stopped with error 1062. Now it reads the segments again, takes the other process's segment, and
// copies every row once.
func TestSplitAfterTheLockWasTakenAgain(t *testing.T) {
	// Segment 0 ([1, 70000]) holds 3,000 rows, segment 1 ([70001, 140000]) 40,000: the worker of segment 0 is
	// done long before segment 1, and splits it.
	e := setup(t, false, harness.GenOptions{Rows: 40_000, StartID: 100_001, GapEvery: -1, LargeStateEvery: -1, Seed: 64})
	if _, err := e.src.Exec("INSERT INTO " + harness.SourceTable + " (id, version, created, state, grade, max_grade, student_module_id) " +
		"SELECT id - 100000, version, created, state, grade, max_grade, student_module_id FROM " + harness.SourceTable + " WHERE id <= 103000"); err != nil {
		t.Fatal(err)
	}
	fence := &epochFence{}
	fence.n.Store(1)
	e.store.SetFence(fence)
	ctx := ctxT(t, 5*time.Minute)

	var splitOnce, waitOnce sync.Once
	split := make(chan uint64, 1) // segment 1's next id when the other process split it
	hookErr := make(chan error, 2)
	b := e.backfill(t, backfill.Config{Workers: 2, ChunkTime: 20 * time.Millisecond, Hooks: backfill.Hooks{
		AfterChunkCopied: func(segment int, next uint64) {
			switch segment {
			case 1:
				splitOnce.Do(func() {
					at, err := otherProcessSplits(ctx, e.dst, fence)
					if err != nil {
						hookErr <- err
					}
					split <- at
				})
			case 0:
				// Segment 0's worker goes on once segment 1's worker has read its segment again (it
				// committed a chunk past the split, which the fence allows only after that).
				waitOnce.Do(func() {
					select {
					case from := <-split:
						if err := waitCommittedPast(ctx, e.dst, 1, from); err != nil {
							hookErr <- err
						}
					case <-ctx.Done():
						hookErr <- errors.New("segment 1 copied no chunk")
					}
				})
			}
		}}})
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	close(hookErr)
	for err := range hookErr {
		t.Fatal(err)
	}
	var segs, fromOther int
	if err := e.dst.QueryRow("SELECT COUNT(*), SUM(segment = 2 AND rows_copied > 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&segs, &fromOther); err != nil {
		t.Fatal(err)
	}
	if fromOther != 1 {
		t.Fatalf("the other process's segment was not copied by this one (%d segments)", segs)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows+3000)
}

// otherProcessSplits does what a split by another process does, in a later epoch of the lock: segment 1 ends
// at three quarters of what it has left, and segment 2 takes the rest. It returns segment 1's next id then.
func otherProcessSplits(ctx context.Context, dst *sql.DB, fence *epochFence) (uint64, error) {
	fence.n.Add(1)
	tx, err := dst.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var next, end uint64
	if err := tx.QueryRowContext(ctx, "SELECT next_id, end_id FROM edxapp_csmh.csmh_sync_backfill WHERE segment = 1 FOR UPDATE").Scan(&next, &end); err != nil {
		return 0, err
	}
	at := next + (end-next)*3/4
	if _, err := tx.ExecContext(ctx, "UPDATE edxapp_csmh.csmh_sync_backfill SET end_id = ? WHERE segment = 1", at-1); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO edxapp_csmh.csmh_sync_backfill (segment, start_id, end_id, next_id, rows_copied, done, updated_at)
		VALUES (2, ?, ?, ?, 0, 0, UTC_TIMESTAMP(6))`, at, end, at); err != nil {
		return 0, err
	}
	return next, tx.Commit()
}

// waitCommittedPast waits until segment's committed next id is past from. Polled here, not with
// harness.Eventually: this runs on a worker's goroutine, where a test may not fail.
func waitCommittedPast(ctx context.Context, dst *sql.DB, segment int, from uint64) error {
	for deadline := time.Now().Add(time.Minute); ; {
		var next uint64
		err := dst.QueryRowContext(ctx, "SELECT next_id FROM edxapp_csmh.csmh_sync_backfill WHERE segment = ?", segment).Scan(&next)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if next > from {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("segment %d committed nothing past id %d within a minute", segment, from)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
