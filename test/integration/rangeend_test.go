package integration

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A transaction is in the binlog, and so in the stream's start position, before its rows are visible. A
// semi-synchronous primary (rpl_semi_sync_master_wait_point=AFTER_SYNC, MySQL's default wait point) holds it
// there until a replica acknowledges it, here until the test turns semi-sync off: an app insert of the
// table's newest row is in the position a first start captures, and invisible to a plain read. The stream
// starts after it, so the backfill must copy it: the range capture waits for it, and once it commits the row
// reaches the target, which ends equal to the source. (A plain MAX(id) ended the range below the row, and
// the row reached neither the backfill nor the stream.)
func TestRangeEndWaitsForTransactionInStartPosition(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 500, Seed: 71, LargeStateEvery: -1})
	sqlExec(t, p.src, "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC', GLOBAL rpl_semi_sync_master_timeout = 300000, GLOBAL rpl_semi_sync_master_enabled = ON")
	t.Cleanup(func() { _, _ = src.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF") })

	var before, maxID string
	if err := src.QueryRow("SELECT @@gtid_binlog_pos, MAX(id) FROM "+harness.SourceTable).Scan(&before, &maxID); err != nil {
		t.Fatal(err)
	}
	inserted := make(chan error, 1)
	go func() {
		_, err := src.ExecContext(ctx, "INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), 'in the binlog, not yet visible', 7)")
		inserted <- err
	}()
	harness.Eventually(t, 30*time.Second, "the app's insert in the source's binlog position, waiting for its acknowledgement", func() (bool, error) {
		var pos string
		err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
		return pos != before, err
	})
	var visible string
	if err := src.QueryRow("SELECT MAX(id) FROM " + harness.SourceTable).Scan(&visible); err != nil || visible != maxID {
		t.Fatalf("MAX(id) %s (%v) while the insert waits, want %s: the row is visible already, and the test proves nothing", visible, err, maxID)
	}

	d := startRun(t, p)
	reported := false // caughtUp prints the daemon's output itself
	t.Cleanup(func() {
		if t.Failed() && !reported {
			_ = d.cmd.Process.Kill() // its output is complete once it has exited
			err := <-d.done
			d.done <- err
			t.Logf("daemon output:\n%s", tailStr(d.out.String(), 40))
		}
	})
	// Once the checkpoint holds the start position, go on when the range capture waits for the insert, or
	// (where nothing waits for it) when the plan is saved.
	harness.Eventually(t, time.Minute, "the range capture waiting for the insert, or the plan saved", func() (bool, error) {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("csmh-sync run exited (%v)", err)
		default:
		}
		var pos string
		if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
			return false, nil // not created yet
		}
		if pos == before {
			t.Fatalf("the start position %s was captured without the insert", pos)
		}
		var segs int
		if err := dst.QueryRow("SELECT COUNT(*) FROM edxapp_csmh.csmh_sync_backfill").Scan(&segs); err == nil && segs > 0 {
			return true, nil
		}
		return captureWaiting(src)
	})
	sqlExec(t, p.src, "SET GLOBAL rpl_semi_sync_master_enabled = OFF")
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	reported = true
	caughtUp(t, src, dst, 2*time.Minute)
	requireEqual(t, src, dst)
}

// captureWaiting reports whether csmh-sync's locking read of an end of the source table is running. While
// the insert is held, it cannot return: the row it waits for is the insert's.
func captureWaiting(src *sql.DB) (bool, error) {
	var n int
	err := src.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
		WHERE USER = ? AND INFO LIKE 'SELECT%ORDER BY%LIMIT 1 LOCK IN SHARE MODE'`, harness.SourceUser).Scan(&n)
	return n > 0, err
}
