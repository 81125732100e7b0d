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
	if bin := os.Getenv("CSMH_BENCH_BIN"); bin != "" { // another build, e.g. the code before a change
		binPath = bin
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
	// Page flushing as docs/runbook.md ("Target flushing") has the operator set it for the copy: adaptive
	// flushing on (MariaDB's default innodb_max_dirty_pages_pct_lwm=0 flushes nothing until the redo log is 7/8
	// full) and an SSD's I/O capacity. Near the redo log's limit the backfill slows to the target's flushing (--max-redo-fill).
	o.ExtraArgs = append(o.ExtraArgs, "--innodb-buffer-pool-size=1G", "--innodb-max-dirty-pages-pct-lwm=10",
		"--innodb-io-capacity=2000", "--innodb-io-capacity-max=4000", "--innodb-print-all-deadlocks=ON")
	o.ExtraArgs = append(o.ExtraArgs, strings.Fields(os.Getenv("CSMH_BENCH_SERVER_ARGS"))...) // tuning runs
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
	return runBin(b, binPath, args...)
}

// runBin is runBinary with another build of csmh-sync.
func runBin(b *testing.B, bin string, args ...string) (time.Duration, float64) {
	b.Helper()
	return runTimed(b, exec.Command(bin, args...), args[0])
}

// runNice is runBinary at the lowest CPU priority (nice 19).
func runNice(b *testing.B, args ...string) (time.Duration, float64) {
	b.Helper()
	return runTimed(b, exec.Command("nice", append([]string{"-n", "19", binPath}, args...)...), args[0])
}

func runTimed(b *testing.B, cmd *exec.Cmd, name string) (time.Duration, float64) {
	b.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("csmh-sync %s: %v\n%s", name, err, out.String())
	}
	took := time.Since(t0)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	rss := float64(ru.Maxrss) / 1024
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("    csmh-sync %s: wall %s, cpu %s (%.0f%% of one core)\n", name, took.Round(time.Millisecond), cpu.Round(time.Millisecond), 100*cpu.Seconds()/took.Seconds())
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

// quiesce waits until every server has written its dirty pages and purged its undo history, and the kernel its
// own dirty pages, so a timed phase does not pay for the background I/O of the phase before it (or of the data
// generation). Each path is then measured on equally quiet servers.
func quiesce(b *testing.B, dbs ...*sql.DB) {
	b.Helper()
	type dirtyPct struct{ lwm, max float64 }
	before := make([]dirtyPct, len(dbs)) // the servers' own settings, restored after the wait
	for i, db := range dbs {
		if err := db.QueryRow("SELECT @@GLOBAL.innodb_max_dirty_pages_pct_lwm, @@GLOBAL.innodb_max_dirty_pages_pct").Scan(&before[i].lwm, &before[i].max); err != nil {
			b.Fatal(err)
		}
		mustExec(b, db, "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001, GLOBAL innodb_max_dirty_pages_pct = 0.001")
	}
	deadline := time.Now().Add(10 * time.Minute)
	for _, db := range dbs {
		for {
			var name string
			var dirty, history int64
			if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
				b.Fatal(err)
			}
			if err := db.QueryRow("SELECT `COUNT` FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len'").Scan(&history); err != nil {
				b.Fatal(err)
			}
			if dirty < 64 && history < 1000 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("servers still busy after 10 minutes: %d dirty pages, history length %d", dirty, history)
			}
			time.Sleep(250 * time.Millisecond) // polling interval of a deadline-bounded wait
		}
	}
	for i, db := range dbs {
		mustExec(b, db, "SET GLOBAL innodb_max_dirty_pages_pct = ?, GLOBAL innodb_max_dirty_pages_pct_lwm = ?", before[i].max, before[i].lwm)
	}
	// The kernel's dirty pages too: the binlog goes through the page cache, and a copy of a million rows
	// leaves about a gigabyte of it for the kernel to write while the next phase runs.
	syscall.Sync()
}
