package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// cutover is the barrier before the read flip: GO only when caught up, backfill done, verify equal and the
// id runway wide enough; NO-GO (exit 1) names the reason.
func TestCutoverAndVerifyCommands(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, _ := p.src.Open("")
	dst, _ := p.dst.Open("")
	defer src.Close()
	defer dst.Close()
	if _, err := harness.GenerateCSMH(ctx, src, harness.SourceTable, harness.GenOptions{Rows: 8000, Seed: 51}); err != nil {
		t.Fatal(err)
	}
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
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "verify") {
		t.Fatalf("cutover with a differing row: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, 2*time.Minute, nil, append([]string{"verify", "--repair"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify --repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)
	_ = d
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
