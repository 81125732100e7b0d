package integration

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A backfill whose first start narrowed the range (--start-id above CSMH's lowest id, --end-id below its
// highest) leaves the rows outside it to nobody while every segment reads done. Cutover compares the whole
// range below the boundary and says NO-GO naming the narrowed plan and the command that copies the rest; that
// command extends the plan, and cutover then says GO.
func TestCutoverNamesRowsOutsideTheBackfillRange(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 4000, Seed: 81})
	lo, hi := gen.MinID+700, gen.MaxID-700
	r := csmh(t, 2*time.Minute, nil, append([]string{"backfill", "--start-id", itoa(lo), "--end-id", itoa(hi)}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill --start-id %d --end-id %d: exit %d\n%s%s", lo, hi, r.code, r.stdout, r.stderr)
	}
	d := startRun(t, p)
	// Changes outside the plan reach the target through the stream alone: the row updated is there afterwards,
	// the others of its range are not.
	var above, below int64
	if err := src.QueryRow("SELECT MIN(id) FROM "+harness.SourceTable+" WHERE id > ?", hi).Scan(&above); err != nil {
		t.Fatal(err)
	}
	if err := src.QueryRow("SELECT MAX(id) FROM "+harness.SourceTable+" WHERE id < ?", lo).Scan(&below); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, p.src, fmt.Sprintf("UPDATE %s SET grade = IFNULL(grade, 0) + 1 WHERE id = %d", harness.SourceTable, above))
	sqlExec(t, p.src, fmt.Sprintf("DELETE FROM %s WHERE id = %d", harness.SourceTable, below))
	caughtUp(t, src, dst, time.Minute)

	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--min-runway", "1000"}, p.args()...)...)
	fix := fmt.Sprintf("'csmh-sync backfill --start-id %d --end-id %d'", gen.MinID, gen.MaxID)
	if r.code != 1 || !hasLineAll(r.stdout, "NO-GO", "backfill range", fmt.Sprintf("covers only ids %d..%d", lo, hi), fix) {
		t.Fatalf("cutover after a backfill of ids %d..%d of %d..%d: exit %d, want NO-GO naming the narrowed range and %s:\n%s%s",
			lo, hi, gen.MinID, gen.MaxID, r.code, fix, r.stdout, r.stderr)
	}

	// The fix it names, with the daemon stopped, then the daemon again.
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.done; err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
	d.done <- nil
	r = csmh(t, 2*time.Minute, nil, append([]string{"backfill", "--start-id", itoa(gen.MinID), "--end-id", itoa(gen.MaxID)}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill over the whole range: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d = startRun(t, p)
	caughtUp(t, src, dst, time.Minute)
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--min-runway", "1000"}, p.args()...)...)
	if r.code != 0 || !hasLine(r.stdout, "ok", "backfill range") {
		t.Fatalf("cutover after the plan was extended: exit %d, want GO:\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)
}
