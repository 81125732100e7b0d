package integration

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// cutover is the barrier before the read flip: GO only when caught up, backfill done, verify equal and the
// id runway wide enough; NO-GO (exit 1) names the reason.
func TestCutoverAndVerifyCommands(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 8000, Seed: 51})
	d := startRun(t, p)
	// Changes keep flowing while cutover runs: it must wait for them, not call them differences.
	load, _ := harness.NewLoadGen(src, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 100, MinID: 1, MaxOps: 300})
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(ctx) }()
	harness.Eventually(t, time.Minute, "backfill done", func() (bool, error) { return backfillDone(dst) })
	<-loadDone

	r := csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "id runway") {
		t.Fatalf("narrow runway: exit %d, want 1 with an id-runway NO-GO line:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--bump-auto-increment"}, p.args()...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "GO: safe to set ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES=False") {
		t.Fatalf("want GO after the bump: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The app had written no CSMHE row: the bump raised the id boundary with CSMHE's AUTO_INCREMENT, and the
	// running stream adopts the new boundary instead of stopping at the old one (500,000).
	targetAI := func() int64 {
		var ai int64
		if err := dst.QueryRow(`SELECT AUTO_INCREMENT FROM information_schema.TABLES
			WHERE TABLE_SCHEMA = 'edxapp_csmh' AND TABLE_NAME = 'coursewarehistoryextended_studentmodulehistoryextended'`).Scan(&ai); err != nil {
			t.Fatal(err)
		}
		return ai
	}
	boundary := func() int64 {
		var b int64
		if err := dst.QueryRow("SELECT id_boundary FROM edxapp_csmh.csmh_sync_state").Scan(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if ai, b := targetAI(), boundary(); ai < 1_000_000 || b != ai {
		t.Fatalf("after the bump: target AUTO_INCREMENT %d, id boundary %d; want the boundary raised to it (≥ 1,000,000)", ai, b)
	}
	sqlExec(t, p.src, "INSERT INTO "+harness.SourceTable+" (id, created, state, student_module_id) VALUES (600000, UTC_TIMESTAMP(6), '{}', 7)")
	harness.Eventually(t, 30*time.Second, "row 600000 streamed past the old boundary", func() (bool, error) {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("run exited (%v) on a row above the old boundary:\n%s", err, tailStr(d.out.String(), 20))
		default:
		}
		var n int
		err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable + " WHERE id = 600000").Scan(&n)
		return n == 1, err
	})
	r = csmh(t, 2*time.Minute, nil, append([]string{"verify", "--json"}, p.args()...)...)
	if r.code != 0 || !strings.Contains(r.stdout, `"equal": true`) {
		t.Fatalf("verify of a correct copy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A row changed behind csmh-sync's back: verify names it, cutover says NO-GO, repair fixes it.
	var id int64
	if err := dst.QueryRow("SELECT id FROM " + harness.TargetTable + " WHERE state IS NOT NULL ORDER BY id LIMIT 1 OFFSET 100").Scan(&id); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, p.dst, "UPDATE "+harness.TargetTable+" SET state = CONCAT(state, ' ') WHERE id = "+itoa(id))
	r = csmh(t, 2*time.Minute, nil, append([]string{"verify"}, p.args()...)...)
	if r.code != 1 || !strings.Contains(r.stdout, itoa(id)) {
		t.Fatalf("verify after a change to id %d: exit %d\n%s%s", id, r.code, r.stdout, r.stderr)
	}
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--min-runway", "1000"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "verify") {
		t.Fatalf("cutover with a differing row: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, 2*time.Minute, nil, append([]string{"verify", "--repair"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify --repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)

	// Once the app has written a CSMHE row, the boundary can rise only up to it: a bump cannot make room, and
	// cutover says so instead of GO.
	appID := boundary() + 100
	sqlExec(t, p.dst, "INSERT INTO "+harness.TargetTable+" (id, created, state, student_module_id) VALUES ("+itoa(appID)+", UTC_TIMESTAMP(6), '{}', 8)")
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--bump-auto-increment", "--min-runway", "2000000"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "the app has written CSMHE rows there") {
		t.Fatalf("bump past an app-written row: exit %d, want 1 with an id-runway NO-GO line:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b := boundary(); b != appID {
		t.Fatalf("id boundary %d after the bump, want the app-written id %d", b, appID)
	}

	// With the daemon stopped, a source write never reaches the target: cutover waits out its timeout and
	// says why instead of GO.
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-d.done; err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
	d.done <- nil
	sqlExec(t, p.src, "INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), '{}', 9)")
	r = csmh(t, time.Minute, nil, append([]string{"cutover", "--timeout", "2s", "--min-runway", "1000"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "is 'csmh-sync run' running") {
		t.Fatalf("cutover with the daemon stopped: exit %d, want 1 with a catch-up NO-GO line:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Raising the id boundary while the app is inserting into CSMHE: an insert still open when cutover starts has
// its id already, below the AUTO_INCREMENT cutover reads. The raise must wait for it and stop below it, or a
// later source row with that id would overwrite the app's row.
func TestBoundaryRaiseWaitsForOpenAppInsert(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 2000, Seed: 61})
	startRun(t, p)
	caughtUp(t, src, dst, time.Minute)
	// The operator raised CSMHE's AUTO_INCREMENT by hand; the boundary stayed at 500,000. An app insert is open.
	sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" AUTO_INCREMENT = 3000000")
	app, err := dst.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback()
	res, err := app.Exec("INSERT INTO " + harness.TargetTable + " (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), '{}', 5)")
	if err != nil {
		t.Fatal(err)
	}
	appID, _ := res.LastInsertId()
	done := make(chan result, 1)
	go func() {
		done <- csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--bump-auto-increment"}, p.args()...)...)
	}()
	harness.Eventually(t, 30*time.Second, "cutover's ALTER waiting for the open app insert", func() (bool, error) {
		var n int
		err := dst.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%AUTO_INCREMENT%' AND STATE LIKE '%metadata lock%'").Scan(&n)
		return n > 0, err
	})
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	var boundary int64
	if err := dst.QueryRow("SELECT id_boundary FROM edxapp_csmh.csmh_sync_state").Scan(&boundary); err != nil {
		t.Fatal(err)
	}
	if boundary != appID || r.code != 0 {
		t.Fatalf("cutover --bump-auto-increment: exit %d, id boundary %d; want GO with the boundary at the app's row %d:\n%s%s", r.code, boundary, appID, r.stdout, r.stderr)
	}
}
