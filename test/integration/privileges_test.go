package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/runner"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// csmh-sync runs as users holding exactly the documented, table-level grants (the harness creates them): preflight
// passes without a word about privileges, and the whole migration — run (backfill and stream), verify, cutover
// with --bump-auto-increment — works with them. Each documented privilege taken away alone makes preflight fail
// (or warn, for the optional ALTER) with the table-level GRANT that gives it back, so the list has nothing preflight
// does not check; every other integration test runs as these users too, so it has nothing missing.
func TestDocumentedGrantsAreEnoughAndEachIsChecked(t *testing.T) {
	if !slices.Equal(harness.OwnTables, runner.OwnTables()) {
		t.Fatalf("harness grants on %v, csmh-sync creates %v", harness.OwnTables, runner.OwnTables())
	}
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 500_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 81})

	r := csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if r.code != 0 || !hasLine(r.stdout, "ok", "source user may read") || !hasLine(r.stdout, "ok", "target user may write") {
		t.Fatalf("preflight as the documented users: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, " grants ") && !strings.HasPrefix(l, "ok") {
			t.Errorf("preflight as the documented users: %s", l)
		}
	}

	v, err := p.src.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		s    *harness.Server
		user string
		gs   []preflight.Grant
	}{
		{p.src, harness.SourceUser, harness.ToolGrants(v, true, false)[harness.SourceUser]},
		{p.dst, harness.TargetUser, harness.ToolGrants(v, false, true)[harness.TargetUser]},
	} {
		account := "'" + side.user + "'@'%'"
		for _, g := range side.gs {
			for _, priv := range g.Privileges {
				sqlExec(t, side.s, "SET sql_log_bin = 0; REVOKE "+priv+" ON "+g.On.String()+" FROM "+account)
				r := csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
				// Restored with the whole documented statement: a grant on a table that does not exist yet needs
				// CREATE in it.
				sqlExec(t, side.s, "SET sql_log_bin = 0; "+g.Statement(account))
				fix := "GRANT " + priv + " ON " + g.On.String() + " TO " + account
				level, code := "FAIL", 2
				if g.Optional != "" {
					level, code = "warn", 0
				}
				if r.code != code || !hasLine(r.stdout, level, fix) {
					t.Errorf("without %s on %s: exit %d, want %d and a %s line with %q:\n%s%s", priv, g.On, r.code, code, level, fix, r.stdout, r.stderr)
				}
			}
		}
	}

	startRun(t, p)
	caughtUp(t, src, dst, 2*time.Minute)
	r = csmh(t, 2*time.Minute, nil, append([]string{"verify"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify as the documented users: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--bump-auto-increment"}, p.args()...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "GO: safe to set") {
		t.Fatalf("cutover --bump-auto-increment as the documented users: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)
}
