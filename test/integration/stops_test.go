package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// ALTER TABLE on the source table stops run with a clear message after checkpointing what came before it.
func TestRunStopsOnSourceDDL(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 2000, Seed: 31})
	d := startRun(t, p)
	harness.Eventually(t, time.Minute, "backfill done", func() (bool, error) { return backfillDone(dst) })
	sqlExec(t, p.src, "INSERT INTO "+harness.SourceTable+" (created, student_module_id) VALUES (NOW(6), 7)")
	var before string
	if err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&before); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, p.src, "ALTER TABLE "+harness.SourceTable+" ADD COLUMN extra int NULL")
	select {
	case err := <-d.done:
		d.done <- err
		if err == nil || !strings.Contains(d.out.String(), "source table changed by DDL") {
			t.Fatalf("run exited with %v; want a DDL stop:\n%s", err, d.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not stop after ALTER TABLE")
	}
	var pos string
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil || pos != before {
		t.Fatalf("checkpoint %q (%v), want the transaction before the ALTER, %q", pos, err, before)
	}
}

// A checkpoint whose binlog was purged makes run exit non-zero with the remediation, never skip.
func TestRunRefusesPurgedBinlog(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, _, _ := p.seed(t, harness.GenOptions{Rows: 1000, Seed: 32})
	r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// More writes, then the source purges every binlog the checkpoint's position needs.
	sqlExec(t, p.src, "INSERT INTO "+harness.SourceTable+" (created, student_module_id) VALUES (NOW(6), 8)")
	sqlExec(t, p.src, "UPDATE "+harness.SourceTable+" SET grade = 99 WHERE id = 5")
	var last string
	if err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&last); err != nil {
		t.Fatal(err)
	}
	harness.PurgeBinlogs(t, src)
	r = csmh(t, time.Minute, nil, append([]string{"run"}, p.args()...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "purged binlogs the checkpoint needs") || !strings.Contains(r.stderr, "start over") {
		t.Fatalf("exit %d; want 2 with the remediation:\n%s", r.code, r.stderr)
	}
	// Found at start, before the stream ran, the stop is recorded as the stream's: status and cutover name it.
	requireStartStop(t, p, "purged", "purged binlogs the checkpoint needs", `start over (docs/runbook.md, "Recover from a purged binlog")`)

	// Starting over by dropping the state alone is refused: the copied rows are still there, and the backfill
	// would keep them as they are (row 5 misses the update the stream never saw).
	for _, tbl := range []string{"csmh_sync_state", "csmh_sync_backfill", "csmh_sync_lanes"} {
		sqlExec(t, p.dst, "DROP TABLE IF EXISTS edxapp_csmh."+tbl)
	}
	r = csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args()...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "already holds rows below the id boundary") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("first start over a filled copy range: exit %d; want 2 and one line naming the rows:\n%s", r.code, r.stderr)
	}
	// Adopting them instead: the backfill completes around them, verify names the stale row, repair fixes it.
	r = csmh(t, time.Minute, nil, append([]string{"backfill", "--adopt-existing-rows"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill --adopt-existing-rows: exit %d:\n%s", r.code, r.stderr)
	}
	if st := readStatus(t, p); len(st.Stops) != 0 {
		t.Fatalf("status --json after starting over: stops %+v; the new checkpoint has none", st.Stops)
	}
	r = csmh(t, time.Minute, nil, append([]string{"verify", "--mode", "rows"}, p.args()...)...)
	if r.code != 1 || !strings.Contains(r.stdout, "different: 5\n") {
		t.Fatalf("verify after adopting a stale copy: exit %d, want 1 naming id 5:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, time.Minute, nil, append([]string{"verify", "--repair"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify --repair: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	dst, _ := p.dst.Open("")
	defer dst.Close()
	requireEqual(t, src, dst)
}

// A source whose GTID history no longer holds the checkpoint (rebuilt, or restored from a backup: here RESET
// MASTER) makes run exit 2 at start, before the stream runs; the stop is recorded as the stream's, and status
// and cutover name it with what to do.
func TestRunRecordsDivergedSourceAtStart(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, _, _ := p.seed(t, harness.GenOptions{Rows: 500, Seed: 33})
	r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	sqlExec(t, p.src, "RESET MASTER")
	sqlExec(t, p.src, "INSERT INTO "+harness.SourceTable+" (created, student_module_id) VALUES (NOW(6), 8)")
	var executed string
	if err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&executed); err != nil {
		t.Fatal(err)
	}
	r = csmh(t, time.Minute, nil, append([]string{"run"}, p.args()...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "holds transactions the source never executed ("+executed+")") {
		t.Fatalf("run against a source without the checkpoint's history (executed %s): exit %d, want 2 naming it:\n%s", executed, r.code, r.stderr)
	}
	requireStartStop(t, p, "diverged", "holds transactions the source never executed", "point --source-dsn at the server the copy started from")
}

// requireStartStop checks what status and cutover say after run refused to start for a stream stop.
func requireStartStop(t *testing.T, p *pair, reason, message, fix string) {
	t.Helper()
	st := readStatus(t, p)
	if len(st.Stops) != 1 || st.Stops[0].Stage != "stream" || st.Stops[0].Reason != reason ||
		!strings.Contains(st.Stops[0].Message, message) || time.Since(st.Stops[0].At) > 5*time.Minute {
		t.Fatalf("status --json stops %+v; want the stream's %s stop, just now", st.Stops, reason)
	}
	r := csmh(t, 30*time.Second, nil, append([]string{"status"}, p.args()...)...)
	if r.code != 0 || !hasLineAll(r.stdout, "stopped:", "stream", reason, fix) {
		t.Fatalf("status: exit %d, want the stream's %s stop and how to continue:\n%s%s", r.code, reason, r.stdout, r.stderr)
	}
	// The stream is stopped: cutover answers at once instead of waiting out --timeout.
	r = csmh(t, time.Minute, nil, append([]string{"cutover", "--timeout", "10m"}, p.args()...)...)
	if r.code != 1 || !hasLineAll(r.stdout, "NO-GO", "stream stopped ("+reason+")", message, "to continue: "+fix) {
		t.Fatalf("cutover: exit %d, want 1 with a NO-GO line naming the %s stop and its fix:\n%s%s", r.code, reason, r.stdout, r.stderr)
	}
	r = csmh(t, time.Minute, nil, append([]string{"cutover", "--json", "--timeout", "10m"}, p.args()...)...)
	var rep struct {
		GO    bool `json:"go"`
		Stops []struct{ Stage, Reason string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 1 || err != nil || rep.GO || len(rep.Stops) != 1 ||
		rep.Stops[0].Stage != "stream" || rep.Stops[0].Reason != reason {
		t.Fatalf("cutover --json: exit %d (%v), want 1 with the %s stop in stops:\n%s%s", r.code, err, reason, r.stdout, r.stderr)
	}
}
