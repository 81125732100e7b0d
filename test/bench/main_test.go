// Package bench measures csmh-sync against baselines run in the same process on the same servers, and prints
// ratios: absolute figures on shared machines are noise, ratios are not. Run with `make bench`, alone.
package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "csmh-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binPath = filepath.Join(dir, "csmh-sync")
	build := exec.Command("go", "build", "-o", binPath, "github.com/csmh-sync/csmh-sync/cmd/csmh-sync")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(2)
	}
	code := m.Run()
	harness.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rowsEnv reads the row count from CSMH_BENCH_ROWS (default 1,000,000).
func rowsEnv() int {
	n := 1_000_000
	if s := os.Getenv("CSMH_BENCH_ROWS"); s != "" {
		fmt.Sscan(s, &n)
	}
	return n
}

func start(b *testing.B, o harness.Options) *harness.Server {
	b.Helper()
	o.ExtraArgs = append(o.ExtraArgs, "--innodb-buffer-pool-size=1G")
	return harness.StartT(b, o)
}

func mustExec(b *testing.B, db *sql.DB, q string, args ...any) {
	b.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		b.Fatalf("%.100s: %v", q, err)
	}
}

// runBinary runs csmh-sync to completion and returns its wall time and peak RSS in MiB.
func runBinary(b *testing.B, args ...string) (time.Duration, float64) {
	b.Helper()
	cmd := exec.Command(binPath, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("csmh-sync %s: %v\n%s", args[0], err, out.String())
	}
	took := time.Since(t0)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	rss := float64(ru.Maxrss) / 1024
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("    csmh-sync %s: wall %s, cpu %s (%.0f%% of one core)\n", args[0], took.Round(time.Millisecond), cpu.Round(time.Millisecond), 100*cpu.Seconds()/took.Seconds())
	return took, rss
}

func timeIt(f func() error) (time.Duration, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0), err
}

func count(b *testing.B, db *sql.DB, table string) int64 {
	b.Helper()
	var n int64
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

func ctxT(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// extraArgs passes CSMH_BENCH_ARGS (space-separated) to the cross-server csmh-sync run, for tuning experiments.
func extraArgs() []string { return strings.Fields(os.Getenv("CSMH_BENCH_ARGS")) }
