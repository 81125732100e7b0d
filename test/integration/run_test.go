package integration

import (
	"context"
	"database/sql"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// daemon is a running `csmh-sync run`.
type daemon struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan error
}

func startRun(t *testing.T, p *pair, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"run"}, p.args(append([]string{"--log-format", "json", "--progress-every", "1s"}, extra...)...)...)
	cmd := exec.Command(binPath, args...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-d.done })
	return d
}

// caughtUp polls until the target's checkpoint contains everything the source executed and the backfill is done.
func caughtUp(t *testing.T, src, dst *sql.DB, within time.Duration, d *daemon) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() && d != nil {
			t.Logf("daemon output:\n%s", tailStr(d.out.String(), 40))
		}
	})
	harness.Eventually(t, within, "target caught up with the source", func() (bool, error) {
		var exec, pos string
		if err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&exec); err != nil {
			return false, err
		}
		if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
			return false, err
		}
		done, err := backfillDone(dst)
		e, _ := gtid.Parse("mariadb", exec)
		c, _ := gtid.Parse("mariadb", pos)
		return done && c.Contains(e), err
	})
}

func requireEqual(t *testing.T, src, dst *sql.DB) {
	t.Helper()
	diffs, n, err := harness.Diff(context.Background(), src, harness.SourceTable, dst, harness.TargetTable, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Fatalf("%d differences between source and target; first: %v", n, diffs)
	}
}

// The backfill and the binlog stream race while the source takes inserts, updates and deletes everywhere in the
// id range (rows not yet copied, rows being copied, rows copied); the daemon is SIGKILLed at random moments
// and restarted. After a catch-up barrier, a full-row comparison must find nothing.
func TestRunRacesLoadAndSurvivesSIGKILL(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 50_000_000})
	src, _ := p.src.Open("")
	dst, _ := p.dst.Open("")
	defer src.Close()
	defer dst.Close()
	if _, err := harness.GenerateCSMH(ctx, src, harness.SourceTable, harness.GenOptions{Rows: 80000, Seed: 21}); err != nil {
		t.Fatal(err)
	}
	load, err := harness.NewLoadGen(src, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 400, Conns: 8,
		InsertWeight: 0.5, UpdateWeight: 0.3, DeleteWeight: 0.2, MinID: 1, Seed: 22})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(lctx) }()
	defer stopLoad()

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	kills := 0
	for kills < 5 {
		d := startRun(t, p, "--workers", "3", "--chunk-time", "40ms", "--batch-rows", "200")
		wait := time.Duration(500+rng.Intn(2500)) * time.Millisecond
		select {
		case err := <-d.done:
			t.Fatalf("run exited early (%v):\n%s", err, d.out.String())
		case <-time.After(wait):
		}
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
		d.done <- nil // for the cleanup
		kills++
		t.Logf("SIGKILL %d after %s", kills, wait)
	}
	d := startRun(t, p, "--workers", "3", "--batch-rows", "200")
	// The load keeps writing while the final daemon finishes the backfill; then it stops and the barrier waits.
	harness.Eventually(t, 3*time.Minute, "backfill done", func() (bool, error) {
		return backfillDone(dst)
	})
	stopLoad()
	<-loadDone
	if st := load.Stats(); st.Updates == 0 || st.Deletes == 0 || st.Inserts == 0 {
		t.Fatalf("load did not exercise every kind of change: %+v", st)
	}
	caughtUp(t, src, dst, time.Minute, d)

	// SIGTERM: finish the batch, commit, exit 0 within 10 s.
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Fatalf("run exited with %v after SIGTERM:\n%s", err, d.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not exit within 10s of SIGTERM")
	}
	t.Logf("SIGTERM to exit: %s; load: %+v", time.Since(start), load.Stats())
	requireEqual(t, src, dst)

	var applied int64
	if err := dst.QueryRow("SELECT applied_inserts + applied_updates + applied_deletes FROM edxapp_csmh.csmh_sync_state").Scan(&applied); err != nil || applied == 0 {
		t.Fatalf("stream applied %d changes (%v)", applied, err)
	}
}

func tailStr(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
