package integration

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A target whose AUTO_INCREMENT falls below the checkpoint's id boundary (what a MySQL 5.7 restart does:
// max(id)+1; here ALTER TABLE … AUTO_INCREMENT = 1, which InnoDB raises to max(id)+1 on MariaDB as well)
// would give the app ids of the copied range. preflight fails on it, run and backfill refuse to start, and a
// running daemon stops within its check period; each names the ALTER that fixes it, and the stop is recorded
// as the stream's for status and cutover.
func TestAutoIncrementBelowBoundaryStops(t *testing.T) {
	const boundary = 1_000_000
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: boundary})
	_, dst, _ := p.seed(t, harness.GenOptions{Rows: 1000, Seed: 71})
	r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if !hasLine(r.stdout, "ok", "target AUTO_INCREMENT 1000000 is at or above the checkpoint's id boundary 1000000") {
		t.Fatalf("preflight before the reset: want the id-boundary check passed:\n%s%s", r.stdout, r.stderr)
	}

	sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" AUTO_INCREMENT = 1")
	var maxID, ai int64
	if err := dst.QueryRow("SELECT MAX(id) FROM " + harness.TargetTable).Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edxapp_csmh' AND TABLE_NAME = 'coursewarehistoryextended_studentmodulehistoryextended'").Scan(&ai); err != nil {
		t.Fatal(err)
	}
	if ai != maxID+1 || ai >= boundary {
		t.Fatalf("after ALTER … AUTO_INCREMENT = 1: AUTO_INCREMENT %d, max(id) %d; want max(id)+1, below %d", ai, maxID, boundary)
	}
	fix := "ALTER TABLE `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` AUTO_INCREMENT = 1000000"
	r = csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if r.code != 2 || !hasLineAll(r.stdout, "FAIL", "id-boundary", "AUTO_INCREMENT "+itoa(ai)+", below the checkpoint's id boundary 1000000", fix) {
		t.Fatalf("preflight after the reset: exit %d, want 2 with an id-boundary FAIL naming %q:\n%s%s", r.code, fix, r.stdout, r.stderr)
	}
	const message = "below the checkpoint's id boundary 1000000"
	for _, cmd := range []string{"backfill", "run"} {
		r = csmh(t, time.Minute, nil, append([]string{cmd}, p.args()...)...)
		if r.code != 2 || !hasLineAll(r.stderr, "csmh-sync "+cmd+": ", message, fix) {
			t.Fatalf("%s after the reset: exit %d, want 2 and its error line naming %q:\n%s", cmd, r.code, fix, r.stderr)
		}
	}
	requireStartStop(t, p, "auto_increment", message, "raise CSMHE's AUTO_INCREMENT to the id boundary")

	// Fixed, run starts (clearing the record); a reset while it runs stops it.
	sqlExec(t, p.dst, fix)
	d := startRun(t, p)
	harness.Eventually(t, time.Minute, "the old stop record cleared by the running stream", func() (bool, error) {
		var n int
		err := dst.QueryRow("SELECT COUNT(*) FROM edxapp_csmh.csmh_sync_stages").Scan(&n)
		return n == 0, err
	})
	sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" AUTO_INCREMENT = 1")
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(d.out.String(), fix) {
			t.Fatalf("run exited with %v; want exit 2 naming %q:\n%s", err, fix, tailStr(d.out.String(), 30))
		}
	case <-time.After(time.Minute):
		t.Fatalf("run did not stop within a minute of the AUTO_INCREMENT reset:\n%s", tailStr(d.out.String(), 30))
	}
	requireStartStop(t, p, "auto_increment", message, "raise CSMHE's AUTO_INCREMENT to the id boundary")
}
