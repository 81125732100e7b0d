package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// retryLog counts the backfill's retry warnings.
type retryLog struct {
	retries atomic.Int64
	mu      sync.Mutex
	last    string
}

func (h *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *retryLog) WithGroup(string) slog.Handler            { return h }
func (h *retryLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retrying") {
		var sb strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&sb, "%s=%v ", a.Key, a.Value); return true })
		h.mu.Lock()
		h.last = sb.String()
		h.mu.Unlock()
		h.retries.Add(1)
	}
	return nil
}

// A production transaction holding a row longer than the tool's lock wait makes the chunk fail with 1205; the
// chunk is retried with backoff and the copy completes once the row is free.
func TestLockWaitTimeoutIsRetried(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 5000, Seed: 21})
	ctx := ctxT(t, 5*time.Minute)
	src, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "test", DSN: e.srcS.DSN("")}, dbconn.Options{LockWaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	app, err := e.srcS.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	tx, err := app.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var held int64
	if err := tx.QueryRowContext(ctx, "SELECT id FROM "+harness.SourceTable+" WHERE id >= ? ORDER BY id LIMIT 1 FOR UPDATE", e.gen.MinID+2500).Scan(&held); err != nil {
		t.Fatal(err)
	}
	h := &retryLog{}
	b, err := backfill.New(src, e.dst, e.store, e.m, slog.New(h), backfill.Config{Workers: 1, SourceTable: srcName, TargetTable: dstName})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	harness.Eventually(t, time.Minute, "a retried lock-wait timeout", func() (bool, error) { return h.retries.Load() > 0, nil })
	h.mu.Lock()
	t.Logf("retry: %s", h.last)
	if !strings.Contains(h.last, "1205") {
		t.Errorf("retried for another reason: %s", h.last)
	}
	h.mu.Unlock()
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}

// Killing the source connections that hold a chunk's locks, after the chunk is written to the target but
// before it commits, must not commit the chunk: the target rolls back, and the chunk is read and written again.
func TestLostSourceConnectionRetriesChunk(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 20000, Seed: 22})
	ctx := ctxT(t, 5*time.Minute)
	var calls, killed atomic.Int64
	var killedHi atomic.Uint64
	var hookErr atomic.Value
	h := &retryLog{}
	hooks := backfill.Hooks{
		BeforeChunkCommit: func(_ int, lo, hi uint64) {
			if calls.Add(1) != 4 {
				return
			}
			// Every open transaction on the source is the copy's: kill their connections.
			rows, err := e.src.QueryContext(ctx, "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID()")
			if err != nil {
				hookErr.Store(err)
				return
			}
			var ids []int64
			for rows.Next() {
				var id int64
				rows.Scan(&id)
				ids = append(ids, id)
			}
			rows.Close()
			for _, id := range ids {
				if _, err := e.src.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
					killed.Add(1)
				}
			}
			killedHi.Store(hi)
		},
		AfterChunkCopied: func(_ int, next uint64) {
			if hi := killedHi.Load(); hi != 0 && next == hi+1 && h.retries.Load() == 0 {
				hookErr.Store(fmt.Errorf("the chunk ending at %d committed although its source locks were lost", hi))
			}
		},
	}
	b, err := backfill.New(e.src, e.dst, e.store, e.m, slog.New(h), backfill.Config{Workers: 1, SourceTable: srcName,
		TargetTable: dstName, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err, _ := hookErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	if killed.Load() == 0 || h.retries.Load() == 0 {
		t.Fatalf("killed %d connections, %d retries", killed.Load(), h.retries.Load())
	}
	h.mu.Lock()
	t.Logf("retry: %s", h.last)
	h.mu.Unlock()
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}

// A target restart in the middle of the copy is survived: the chunks in flight fail, are retried until the
// server is back, and continue from the checkpoint. The restart lands while the copy is under way, whatever
// the timing: the worker whose third chunk committed shuts the server down from its hook, so its segment —
// two segments of 10,000 ids, chunks of at most 1,000, 2,000, 4,000 … ids — cannot be finished before the
// server is down.
func TestTargetRestartIsSurvived(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 20000, Seed: 23})
	ctx := ctxT(t, 5*time.Minute)
	var calls atomic.Int64
	var copied, pending int64
	var readErr error
	restarted := make(chan error, 1)
	hooks := backfill.Hooks{AfterChunkCopied: func(int, uint64) {
		if calls.Add(1) != 3 {
			return
		}
		readErr = e.dst.QueryRow("SELECT SUM(rows_copied), SUM(done = 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&copied, &pending)
		if err := e.dstS.Shutdown(); err != nil {
			restarted <- err
			return
		}
		go func() { restarted <- e.dstS.StartAgain(ctx) }()
	}}
	b, err := backfill.New(e.src, e.dst, e.store, e.m, harness.Logger(t), backfill.Config{Workers: 2,
		SourceTable: srcName, TargetTable: dstName, MaxRowsPerSecond: 4000, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if readErr != nil {
		t.Fatal(readErr)
	}
	if copied <= 0 || copied >= e.gen.Rows || pending == 0 {
		t.Fatalf("at the restart the checkpoint counted %d of %d rows copied, %d segments pending: the restart did not land during the copy",
			copied, e.gen.Rows, pending)
	}
	t.Logf("target restarted with %d of %d rows copied", copied, e.gen.Rows)
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}

// A source outage longer than the retry budget ends a one-shot backfill with an error naming the attempts;
// with no limit (the daemon) the same outage is ridden out and the copy completes once the server is back.
func TestSourceOutageAndRetryLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attempts int
	}{{"limited", 3}, {"unlimited", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, false, harness.GenOptions{Rows: 20000, Seed: 24})
			ctx := ctxT(t, 5*time.Minute)
			h := &retryLog{}
			var calls atomic.Int64
			down := make(chan error, 1)
			hooks := backfill.Hooks{AfterChunkCopied: func(int, uint64) {
				if calls.Add(1) == 2 {
					go func() { down <- e.srcS.Kill() }()
				}
			}}
			b, err := backfill.New(e.src, e.dst, e.store, e.m, slog.New(h), backfill.Config{Workers: 1, SourceTable: srcName,
				TargetTable: dstName, MaxRowsPerSecond: 4000, MaxAttempts: tc.attempts, Hooks: hooks})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- b.Run(ctx) }()
			if err := <-down; err != nil {
				t.Fatal(err)
			}
			if tc.attempts > 0 {
				err := <-done
				if err == nil || !strings.Contains(err.Error(), "attempts failed") {
					t.Fatalf("backfill with the source down: %v; want it to give up naming the attempts", err)
				}
				if n := h.retries.Load(); n != int64(tc.attempts) {
					t.Fatalf("%d retries before giving up, want %d", n, tc.attempts)
				}
				return
			}
			// Twice the failures the limited run gave up after (6 retries are ~6 s of backoff), then the server returns.
			harness.Eventually(t, time.Minute, "6 retries while the source is down", func() (bool, error) {
				select {
				case err := <-done:
					t.Fatalf("backfill ended while the source was down: %v", err)
				default:
				}
				return h.retries.Load() >= 6, nil
			})
			if err := e.srcS.StartAgain(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("backfill after the source came back: %v", err)
			}
			e.requireEqual(t)
			e.requireCounted(t, e.gen.Rows)
		})
	}
}

// A process can die with its chunk's COMMIT already sent: the server finishes that commit after the next
// process has loaded the checkpoint. The next process's copy of the same ids then finds the rows present and
// counts none of them; it must not write its stale count over the one just committed.
func TestCommitInFlightIsCountedOnce(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprintf("same_server=%v", same), func(t *testing.T) {
			e := setup(t, same, harness.GenOptions{Rows: 20000, Seed: 23})
			ctx1, cancel1 := context.WithCancel(ctxT(t, 5*time.Minute))
			held, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			releaseOnce := func() { once.Do(func() { close(release) }) }
			t.Cleanup(releaseOnce)
			var before, after atomic.Int32
			b1 := e.backfill(t, backfill.Config{Workers: 1, Hooks: backfill.Hooks{
				BeforeChunkCommit: func(int, uint64, uint64) {
					if before.Add(1) == 2 {
						close(held)
						<-release // the commit that outlives its process
					}
				},
				AfterChunkCopied: func(int, uint64) {
					if after.Add(1) == 2 {
						cancel1() // the process is gone once that commit lands
					}
				},
			}})
			done1 := make(chan error, 1)
			go func() { done1 <- b1.Run(ctx1) }()
			select {
			case <-held:
			case err := <-done1:
				t.Fatalf("first backfill ended before its second chunk: %v", err)
			}
			b2 := e.backfill(t, backfill.Config{Workers: 1})
			done2 := make(chan error, 1)
			go func() { done2 <- b2.Run(ctxT(t, 5*time.Minute)) }()
			// Its copy statement proves it has loaded the checkpoint from before that commit (the first process is
			// parked before its commit and writes nothing else).
			harness.Eventually(t, time.Minute, "the second backfill copying the chunk whose commit is in flight", func() (bool, error) {
				var copying int
				err := e.dst.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
					WHERE INFO LIKE 'LOAD DATA %' OR INFO LIKE 'INSERT IGNORE INTO %'`).Scan(&copying)
				return copying > 0, err
			})
			releaseOnce()
			if err := <-done1; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("first backfill: %v", err)
			}
			if err := <-done2; err != nil {
				t.Fatalf("second backfill: %v", err)
			}
			e.requireEqual(t)
			e.requireCounted(t, e.gen.Rows)
		})
	}
}
