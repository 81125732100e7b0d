package integration

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

const (
	// freezeFor is how long the target stays frozen: longer than the migration lock's check period (5 s) plus its
	// query timeout (10 s), so the check surely times out while the server is stopped.
	freezeFor = 30 * time.Second
	// freezeDeadline is the copy's --chunk-deadline: no source row may stay locked longer, frozen target or not.
	freezeDeadline = 2 * time.Second
	// freezeRows at freezeRate rows/s take about 25 s to copy; the freeze comes after freezeAfter rows.
	freezeRows  = 100_000
	freezeRate  = "4000"
	freezeAfter = 8_000
	// noRedoGuard keeps the reader from asking the frozen target for its redo log before each chunk: with the
	// guard a chunk waits for that answer without holding source rows, and this test is about the chunks that
	// do hold them when the target stops answering, which the deadline must release.
	noRedoGuard = "--max-redo-fill=0"
)

// A target that hangs (its mariadbd stopped with SIGSTOP for 30 s, then resumed) in the middle of the copy is
// ridden out by both commands: the lock check times out, the process takes its lock back once the server
// answers — whether or not the server has yet noticed that the lock's old session is gone — and finishes,
// every row copied once and the target equal to the source. Meanwhile no source transaction holds row locks
// for longer than the chunk deadline: the app's changes to the rows of the chunks in flight go through.
func TestTargetFreezeIsRiddenOut(t *testing.T) {
	t.Run("backfill", func(t *testing.T) {
		p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 50_000_000})
		src, dst, gen := p.seed(t, harness.GenOptions{Rows: freezeRows, Seed: 71})
		pr := startProc(t, append([]string{"backfill"}, p.args("--log-format", "json", "--workers", "2",
			"--max-rows-per-second", freezeRate, "--chunk-deadline", freezeDeadline.String(), noRedoGuard)...)...)
		freezeDuringCopy(t, p.dst, src, dst, pr, gen.Rows, true)
		if err := pr.wait(3 * time.Minute); err != nil {
			t.Fatalf("backfill after the freeze: %v\n%s", err, tailStr(pr.output(), 30))
		}
		requireLockTakenBack(t, pr)
		requireEqual(t, src, dst)
		var inTarget, counted int64
		if err := dst.QueryRow("SELECT (SELECT COUNT(*) FROM "+harness.TargetTable+"), "+
			"(SELECT SUM(rows_copied) FROM edxapp_csmh.csmh_sync_backfill)").Scan(&inTarget, &counted); err != nil {
			t.Fatal(err)
		}
		if inTarget != gen.Rows || counted != gen.Rows {
			t.Fatalf("target %d rows, checkpoint counts %d, source %d", inTarget, counted, gen.Rows)
		}
	})

	t.Run("run", func(t *testing.T) {
		ctx := context.Background()
		p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 50_000_000})
		src, dst, gen := p.seed(t, harness.GenOptions{Rows: freezeRows, Seed: 72})
		load, err := harness.NewLoadGen(src, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 100, Conns: 4,
			InsertWeight: 0.5, UpdateWeight: 0.3, DeleteWeight: 0.2, Seed: 73})
		if err != nil {
			t.Fatal(err)
		}
		lctx, stopLoad := context.WithCancel(ctx)
		defer stopLoad()
		loadDone := make(chan error, 1)
		go func() { loadDone <- load.Run(lctx) }()

		pr := startProc(t, append([]string{"run"}, p.args("--log-format", "json", "--workers", "2",
			"--max-rows-per-second", freezeRate, "--batch-rows", "200", "--chunk-deadline", freezeDeadline.String(), noRedoGuard)...)...)
		freezeDuringCopy(t, p.dst, src, dst, pr, gen.Rows, false)
		harness.Eventually(t, 3*time.Minute, "backfill done after the freeze", func() (bool, error) {
			if pr.exited() {
				t.Fatalf("run exited after the freeze:\n%s", tailStr(pr.output(), 30))
			}
			return backfillDone(dst)
		})
		stopLoad()
		<-loadDone
		if st := load.Stats(); st.Inserts == 0 || st.Updates == 0 || st.Deletes == 0 {
			t.Fatalf("load did not exercise every kind of change: %+v", st)
		}
		executed := caughtUp(t, src, dst, time.Minute)
		if err := pr.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := pr.wait(30 * time.Second); err != nil {
			t.Fatalf("run after SIGTERM: %v\n%s", err, tailStr(pr.output(), 30))
		}
		requireLockTakenBack(t, pr)
		requireEqual(t, src, dst)

		m := firstGTID.FindStringSubmatch(pr.output())
		if m == nil {
			t.Fatalf("the first start did not log its captured position:\n%s", tailStr(pr.output(), 30))
		}
		start := mustGTID(t, m[1])
		var txs int64
		var pos string
		if err := dst.QueryRow("SELECT applied_transactions, gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&txs, &pos); err != nil {
			t.Fatal(err)
		}
		final := mustGTID(t, pos)
		if !final.Contains(executed) {
			t.Fatalf("checkpoint %s after SIGTERM, behind the barrier's %s", final, executed)
		}
		if want := start.Behind(final); txs != want {
			t.Fatalf("the checkpoint counts %d source transactions between %s and %s, which hold %d: some were applied twice or never",
				txs, start, final, want)
		}
	})
}

// freezeDuringCopy waits until the copy is under way, freezes the target for freezeFor, and proves from the
// checkpoint that the copy was neither unstarted nor done on either side of the freeze. Throughout the freeze
// it watches the source's transactions that hold row locks: none may live longer than the chunk deadline, and
// when onlyCopy (no app load beside the copy) the copy's own must have been seen, so the watch proved something.
func freezeDuringCopy(t *testing.T, srv *harness.Server, src, dst *sql.DB, pr *proc, total int64, onlyCopy bool) {
	t.Helper()
	var before int64
	harness.Eventually(t, 2*time.Minute, "the copy under way", func() (bool, error) {
		if pr.exited() {
			t.Fatalf("csmh-sync exited before the freeze:\n%s", tailStr(pr.output(), 30))
		}
		var err error
		before, err = copiedRows(dst)
		return before >= freezeAfter, err
	})
	if before >= total/2 {
		t.Fatalf("%d of %d rows copied before the freeze: slow the copy down", before, total)
	}
	watch := watchSourceLocks(src)
	thaw := srv.FreezeT(t)
	frozen := time.Now()
	harness.Eventually(t, freezeFor, "the migration lock check to time out on the frozen target", func() (bool, error) {
		if pr.exited() {
			t.Fatalf("csmh-sync exited while the target was frozen:\n%s", tailStr(pr.output(), 30))
		}
		return strings.Contains(pr.output(), `"msg":"migration lock lost`), nil
	})
	select { // the rest of the freeze
	case <-pr.done:
		t.Fatalf("csmh-sync exited while the target was frozen:\n%s", tailStr(pr.output(), 30))
	case <-time.After(freezeFor - time.Since(frozen)):
	}
	thaw()
	seen, longest, err := watch()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("during the freeze: %d source transactions held row locks, the longest for at least %s", seen, longest.Round(time.Millisecond))
	if limit := freezeDeadline + 1500*time.Millisecond; longest > limit {
		t.Fatalf("a source transaction held row locks for %s while the target was frozen, beyond the chunk deadline %s (limit %s)",
			longest.Round(time.Millisecond), freezeDeadline, limit)
	}
	if onlyCopy && seen == 0 {
		t.Fatal("no chunk held source rows during the freeze: the watch proved nothing")
	}
	after, err := copiedRows(dst)
	if err != nil {
		t.Fatal(err)
	}
	if after >= total {
		t.Fatalf("%d of %d rows copied when the target was thawed: the freeze did not land during the copy", after, total)
	}
	t.Logf("target frozen for %s with %d of %d rows copied; %d copied at the thaw", time.Since(frozen).Round(time.Second), before, total, after)
}

// watchSourceLocks samples the source's transactions that hold row locks until the returned function is
// called, which says how many it saw and the longest time one was seen for (a lower bound of its life, short by
// at most one sampling interval). A transaction is known by its session and start time: a read-only one has
// no trx_id of its own.
func watchSourceLocks(src *sql.DB) func() (seen int, longest time.Duration, err error) {
	stop, done := make(chan struct{}), make(chan struct{})
	first, last := map[string]time.Time{}, map[string]time.Time{}
	var werr error
	go func() {
		defer close(done)
		// InnoDB refreshes the INNODB_TRX snapshot only when it was last read more than 0.1 s ago: a faster
		// sampler would read the same stale snapshot for ever.
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			rows, err := src.Query("SELECT CONCAT(trx_mysql_thread_id, '/', trx_started) FROM information_schema.INNODB_TRX WHERE trx_rows_locked > 0 OR trx_lock_structs > 0")
			if err != nil {
				werr = err
				return
			}
			now := time.Now()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					werr = err
				}
				if _, ok := first[id]; !ok {
					first[id] = now
				}
				last[id] = now
			}
			if err := rows.Close(); err != nil {
				werr = err
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int, time.Duration, error) {
		close(stop)
		<-done
		var longest time.Duration
		for id, f := range first {
			longest = max(longest, last[id].Sub(f))
		}
		return len(first), longest, werr
	}
}

func requireLockTakenBack(t *testing.T, pr *proc) {
	t.Helper()
	out := pr.output()
	if !strings.Contains(out, `"msg":"migration lock taken again`) {
		t.Fatalf("no log line of the lock taken back:\n%s", tailStr(out, 30))
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "migration lock") {
			t.Log(l)
		}
	}
}

func copiedRows(dst *sql.DB) (int64, error) {
	var n int64
	err := dst.QueryRow("SELECT COALESCE(SUM(rows_copied), 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&n)
	return n, err
}

// proc is a csmh-sync process whose output can be read while it runs.
type proc struct {
	cmd  *exec.Cmd
	out  *harness.SyncBuffer
	done chan struct{}
	err  error // set before done is closed
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	pr := &proc{cmd: exec.Command(binPath, args...), out: &harness.SyncBuffer{}, done: make(chan struct{})}
	pr.cmd.Stdout, pr.cmd.Stderr, pr.cmd.Env = pr.out, pr.out, os.Environ()
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { pr.err = pr.cmd.Wait(); close(pr.done) }()
	t.Cleanup(func() {
		_ = pr.cmd.Process.Kill()
		<-pr.done
		if t.Failed() {
			t.Logf("csmh-sync output:\n%s", tailStr(pr.output(), 40))
		}
	})
	return pr
}

func (p *proc) output() string { return p.out.String() }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit error (nil for exit 0).
func (p *proc) wait(within time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		return errors.New("did not exit within " + within.String())
	}
}
