package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// lookalikes starts two separate servers that look like one by every configuration value: the same
// @@server_id, @@hostname, @@port (3306, each in its own network namespace) and @@datadir (each server's own
// directory bind-mounted at one path in its own mount namespace), as two deployments of one chart would be.
func lookalikes(t *testing.T) (a, b *harness.IsolatedServer) {
	t.Helper()
	iso := harness.Isolation{Hostname: "edx-mysql-0", DataDir: t.TempDir()}
	a = harness.StartIsolatedT(t, harness.Options{ServerID: 1}, iso)
	b = harness.StartIsolatedT(t, harness.Options{ServerID: 1}, iso)
	ident := func(s *harness.IsolatedServer) string {
		db, err := s.Open("")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var id, host, port, dir string
		if err := db.QueryRow("SELECT @@server_id, @@hostname, @@port, @@datadir").Scan(&id, &host, &port, &dir); err != nil {
			t.Fatal(err)
		}
		return strings.Join([]string{id, host, port, dir}, "|")
	}
	ia, ib := ident(a), ident(b)
	if ia != ib || a.Addr() == b.Addr() {
		t.Fatalf("the servers must share server_id|hostname|port|datadir and differ in address: %s at %s, %s at %s",
			ia, a.Addr(), ib, b.Addr())
	}
	t.Logf("two servers at %s and %s, both %s", a.Addr(), b.Addr(), ia)
	return a, b
}

// Two servers deployed alike (server_id, hostname, port, datadir all equal) are two servers: the backfill copies
// across them and the target ends up with exactly the source's rows, not those of the stale copy of the source
// table the target server holds under the same name. --same-server yes is refused there before anything is
// written.
func TestBackfillBetweenLookalikeServersCopiesAcross(t *testing.T) {
	ctx := context.Background()
	a, b := lookalikes(t)
	if err := a.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	// The target server also holds edxapp.courseware_studentmodulehistory: an old copy with other rows.
	if err := b.LoadEdxSchemaWith(ctx, harness.SchemaOptions{TargetAutoIncrement: 50_000_000}); err != nil {
		t.Fatal(err)
	}
	p := &pair{src: a.Server, dst: b.Server}
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 20000, Seed: 71})
	if _, err := harness.GenerateCSMH(ctx, dst, harness.SourceTable, harness.GenOptions{Rows: 15000, Seed: 72}); err != nil {
		t.Fatal(err)
	}
	if _, n, err := harness.Diff(ctx, src, harness.SourceTable, dst, harness.SourceTable, 0, 1<<62); err != nil || n == 0 {
		t.Fatalf("the target's stale copy must differ from the source: %d differences (%v)", n, err)
	}
	if same, err := dbconn.SameServer(ctx, src, dst); err != nil || same {
		t.Fatalf("dbconn.SameServer on two lookalike servers = %v, %v; want false", same, err)
	}

	r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args("--same-server", "yes")...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "--same-server yes") || !strings.Contains(r.stderr, "different servers") {
		t.Fatalf("--same-server yes on two servers: exit %d, want 2 and a refusal\n%s", r.code, r.stderr)
	}
	t.Logf("--same-server yes: %s", r.stderr)
	var copied int64
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&copied); err != nil || copied != 0 {
		t.Fatalf("refused backfill wrote %d rows (%v)", copied, err)
	}

	r = csmh(t, 3*time.Minute, nil, append([]string{"backfill"}, p.args("--log-format", "json")...)...)
	if r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, `"msg":"source and target are different servers: chunks are copied across them"`) ||
		!strings.Contains(r.stderr, `"same_server":false`) {
		t.Fatalf("backfill did not log the cross-server choice:\n%s", r.stderr)
	}
	requireEqual(t, src, dst)
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&copied); err != nil || copied != gen.Rows {
		t.Fatalf("target holds %d rows, source %d (%v)", copied, gen.Rows, err)
	}
}

// On one server whose target user may not read the source table, the backfill proves one server but copies
// across connections, and says why; --same-server yes is refused with the grant that fixes it.
func TestBackfillOnOneServerWithoutReadAccessCopiesAcross(t *testing.T) {
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{})
	if err := s.LoadEdxSchemaWith(ctx, harness.SchemaOptions{TargetAutoIncrement: 50_000_000}); err != nil {
		t.Fatal(err)
	}
	// The documented target grants without the same-server copy's read of the source table.
	v, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, "csmh_target", "target-secret", harness.GrantSpecs(preflight.TargetGrants(harness.Setup(v)))...); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "target-password")
	if err := os.WriteFile(pw, []byte("target-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pair{src: s, dst: s}
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 10000, Seed: 73})
	args := func(extra ...string) []string {
		return append([]string{"backfill", "--source-dsn", s.SourceDSN(), "--target-dsn", s.UserDSN("csmh_target", "", ""),
			"--target-password-file", pw, "--metrics-addr", "", "--log-format", "json"}, extra...)
	}

	r := csmh(t, time.Minute, nil, args("--same-server", "yes")...)
	if r.code != 2 || !strings.Contains(r.stderr, "GRANT SELECT ON `edxapp`.`courseware_studentmodulehistory` TO") {
		t.Fatalf("--same-server yes without read access: exit %d, want 2 and the grant that fixes it\n%s", r.code, r.stderr)
	}
	t.Logf("--same-server yes: %s", r.stderr)
	r = csmh(t, 3*time.Minute, nil, args()...)
	if r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, `"msg":"source and target are one server, but the target connection cannot read the source table: chunks are copied across connections"`) ||
		!strings.Contains(r.stderr, `"same_server":false`) {
		t.Fatalf("backfill did not log why it copies across connections:\n%s", r.stderr)
	}
	requireEqual(t, src, dst)
	var copied int64
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&copied); err != nil || copied != gen.Rows {
		t.Fatalf("target holds %d rows, source %d (%v)", copied, gen.Rows, err)
	}
}

// A --same-server value other than auto, yes or no (flag or CSMH_SAME_SERVER) is refused before anything
// connects: the servers named here do not exist.
func TestSameServerFlagIsValidated(t *testing.T) {
	args := []string{"backfill", "--source-dsn", "root@tcp(127.0.0.1:1)/", "--target-dsn", "root@tcp(127.0.0.1:1)/", "--metrics-addr", ""}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, append(args, "--same-server", "maybe")},
		{"environment", []string{"CSMH_SAME_SERVER=maybe"}, args},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := csmh(t, 30*time.Second, tc.env, tc.args...)
			want := `csmh-sync backfill: --same-server "maybe": use auto, yes or no` + "\n"
			if r.code != 2 || r.stderr != want {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", r.code, r.stderr, want)
			}
		})
	}
}
