// Package integration runs csmh-sync end to end against real mariadbd servers started by the harness.
package integration

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// binPath is the csmh-sync binary built once for the package's tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "csmh-sync-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binPath = filepath.Join(dir, "csmh-sync")
	build := exec.Command("go", "build", "-race", "-o", binPath, "github.com/csmh-sync/csmh-sync/cmd/csmh-sync")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build csmh-sync:", err)
		os.Exit(2)
	}
	code := m.Run()
	harness.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result of one CLI invocation.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// csmh runs the binary with args and environment additions, bounded by timeout.
func csmh(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run csmh-sync %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("csmh-sync %v did not finish within %s\nstdout:%s\nstderr:%s", args, timeout, r.stdout, r.stderr)
	}
	return r
}

// pair is a source and a target server with the edX schema loaded.
type pair struct {
	src, dst *harness.Server
}

func newPair(t *testing.T, srcOpts harness.Options, schema harness.SchemaOptions) *pair {
	t.Helper()
	p := &pair{src: harness.StartT(t, srcOpts), dst: harness.StartT(t, harness.Options{})}
	ctx := context.Background()
	so, to := schema, schema
	so.SkipTarget, to.SkipSource = true, true
	if err := p.src.LoadEdxSchemaWith(ctx, so); err != nil {
		t.Fatal(err)
	}
	if err := p.dst.LoadEdxSchemaWith(ctx, to); err != nil {
		t.Fatal(err)
	}
	return p
}

// seed connects to both servers (closed when the test ends) and fills the source table with generated rows.
func (p *pair) seed(t *testing.T, opts harness.GenOptions) (src, dst *sql.DB, gen harness.GenResult) {
	t.Helper()
	var err error
	if src, err = p.src.Open(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if dst, err = p.dst.Open(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	if gen, err = harness.GenerateCSMH(context.Background(), src, harness.SourceTable, opts); err != nil {
		t.Fatal(err)
	}
	return src, dst, gen
}

// args are the connection flags for csmh-sync: it connects as the harness's users, which hold exactly the
// documented grants (harness.SourceUser, harness.TargetUser).
func (p *pair) args(extra ...string) []string {
	return append([]string{"--source-dsn", p.src.SourceDSN(), "--target-dsn", p.dst.TargetDSN(), "--metrics-addr", ""}, extra...)
}

// backfillDone reports whether the backfill has a plan and every segment of it is copied. (An empty plan
// table is not "done": the backfill may not have captured its range yet.)
func backfillDone(db *sql.DB) (bool, error) {
	var segs, pending int
	err := db.QueryRow("SELECT COUNT(*), COALESCE(SUM(done = 0), 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&segs, &pending)
	return err == nil && segs > 0 && pending == 0, err
}
