package integration

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// The migration lock fences the checkpoint. A run whose lock connection is killed takes the lock again and
// carries on without a lost or doubled row; a run whose lock another process took in the meantime writes
// nothing more — not a row, not a position — and stops with a one-line error naming the other holder.
func TestRunWritesNothingWithoutItsLock(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 51})
	d := startRun(t, p)
	caughtUp(t, src, dst, time.Minute)

	h := sha256.Sum256([]byte(harness.TargetTable))
	name := "csmh-sync:" + hex.EncodeToString(h[:16])
	holder := func() int64 {
		var id sql.NullInt64
		if err := dst.QueryRow("SELECT IS_USED_LOCK(?)", name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id.Int64
	}
	first := holder()
	if first == 0 {
		t.Fatal("the run holds no migration lock")
	}

	// 1. The lock's connection dies (a network blip, a KILL): the run takes the lock again and goes on.
	if _, err := dst.Exec("KILL ?", first); err != nil {
		t.Fatal(err)
	}
	if _, err := harness.GenerateCSMH(ctx, src, harness.SourceTable, harness.GenOptions{Rows: 2000, Seed: 52, StartID: 100_000}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "the run took its lock again", func() (bool, error) {
		id := holder()
		return id != 0 && id != first, nil
	})
	caughtUp(t, src, dst, time.Minute)
	requireEqual(t, src, dst)

	// 2. Another process takes the lock while the run's connection is gone.
	other, err := dst.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	harness.Eventually(t, 30*time.Second, "another connection took the lock", func() (bool, error) {
		if id := holder(); id != 0 {
			if _, err := dst.Exec("KILL ?", id); err != nil {
				return false, err
			}
		}
		var got sql.NullInt64
		err := other.QueryRowContext(ctx, "SELECT GET_LOCK(?, 1)", name).Scan(&got)
		return got.Int64 == 1, err
	})
	var rowsBefore int64
	var posBefore string
	if err := dst.QueryRow("SELECT (SELECT COUNT(*) FROM "+harness.TargetTable+"), gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&rowsBefore, &posBefore); err != nil {
		t.Fatal(err)
	}
	if _, err := harness.GenerateCSMH(ctx, src, harness.SourceTable, harness.GenOptions{Rows: 2000, Seed: 53, StartID: 200_000}); err != nil {
		t.Fatal(err)
	}
	var exit error
	select {
	case exit = <-d.done:
		d.done <- exit
	case <-time.After(time.Minute):
		t.Fatalf("the run did not stop after losing its lock to another process; output:\n%s", tailStr(d.out.String(), 20))
	}
	var ee *exec.ExitError
	if !errors.As(exit, &ee) || ee.ExitCode() == 0 || !strings.Contains(d.out.String(), "another csmh-sync") {
		t.Fatalf("run exit %v, want non-zero naming the other process; output:\n%s", exit, tailStr(d.out.String(), 20))
	}
	var rowsAfter int64
	var posAfter string
	if err := dst.QueryRow("SELECT (SELECT COUNT(*) FROM "+harness.TargetTable+"), gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&rowsAfter, &posAfter); err != nil {
		t.Fatal(err)
	}
	if rowsAfter != rowsBefore || posAfter != posBefore {
		t.Fatalf("without its lock the run still wrote: rows %d → %d, position %s → %s", rowsBefore, rowsAfter, posBefore, posAfter)
	}

	// 3. The other process is gone: a new run continues from the checkpoint, nothing lost, nothing doubled.
	if _, err := other.ExecContext(ctx, "DO RELEASE_LOCK(?)", name); err != nil {
		t.Fatal(err)
	}
	startRun(t, p)
	caughtUp(t, src, dst, time.Minute)
	requireEqual(t, src, dst)
}
