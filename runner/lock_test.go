package runner

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

const lockTarget = "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended"

func TestLockNamesFitMySQLLimit(t *testing.T) {
	name := lockName(lockTarget)
	a, b := ownLockName(name), ownLockName(name)
	if len(name) > 64 || len(a) > 64 {
		t.Fatalf("lock names of %d and %d characters; MySQL allows 64", len(name), len(a))
	}
	if a == b || !strings.HasPrefix(a, name+":") {
		t.Fatalf("own lock names %q and %q: want distinct names under %q", a, b, name)
	}
}

// lockLog records the lock's log messages.
type lockLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *lockLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *lockLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lockLog) WithGroup(string) slog.Handler            { return h }
func (h *lockLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

func (h *lockLog) has(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

func lockServer(t *testing.T) *sql.DB {
	t.Helper()
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	db, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func usedBy(t *testing.T, db *sql.DB, name string) int64 {
	t.Helper()
	var id sql.NullInt64
	if err := db.QueryRow("SELECT IS_USED_LOCK(?)", name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id.Int64
}

// checkIn runs the fence check in a transaction of its own.
func checkIn(t *testing.T, db *sql.DB, l *migrationLock, epoch uint64) error {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	return l.Check(context.Background(), tx, epoch)
}

// A lock connection the process gave up on while the server still keeps its session (a target that hung and
// resumed before noticing the closed socket) is this process's, proven by the own lock it holds: taking the
// lock again ends that session and succeeds, and the fence moves to the new connection and epoch.
func TestLockIsTakenBackFromOwnStaleSession(t *testing.T) {
	ctx := context.Background()
	db := lockServer(t)
	l, err := takeLock(ctx, db, lockTarget)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	old, oldEpoch := l.holder.Load(), l.Epoch()
	if checkIn(t, db, l, oldEpoch) != nil || usedBy(t, db, l.name) != int64(old) || usedBy(t, db, l.own) != int64(old) {
		t.Fatalf("after the first take: connection %d should hold both locks", old)
	}

	// What hold does when a check times out, except that the server keeps the session: its socket stays open.
	stale := l.conn
	defer stale.Close()
	l.holder.Store(0)
	l.conn = nil
	if err := checkIn(t, db, l, oldEpoch); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("fence check without the lock: %v, want ErrFenced", err)
	}
	h := &lockLog{}
	if err := l.acquire(ctx, slog.New(h)); err != nil {
		t.Fatalf("take the lock back from this process's stale session: %v", err)
	}
	now := l.holder.Load()
	if now == 0 || now == old || usedBy(t, db, l.name) != int64(now) || usedBy(t, db, l.own) != int64(now) {
		t.Fatalf("after the take-back: holder %d (was %d); migration lock held by %d, own by %d", now, old,
			usedBy(t, db, l.name), usedBy(t, db, l.own))
	}
	if !h.has("previous lock session") {
		t.Fatalf("the take-back logged %q, want the stale session named", h.msgs)
	}
	if err := stale.PingContext(ctx); err == nil {
		t.Fatal("the stale session still answers: it was not killed")
	}
	if err := checkIn(t, db, l, oldEpoch); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("fence check with the epoch before the take-back: %v, want ErrFenced", err)
	}
	if err := checkIn(t, db, l, l.Epoch()); err != nil || l.Epoch() != oldEpoch+1 {
		t.Fatalf("fence check in epoch %d: %v", l.Epoch(), err)
	}
}

// Another process's lock is never taken and its session never killed: not at the start, and not when this
// process lost its connection and the other took the lock meanwhile.
func TestLockOfAnotherProcessIsLeftAlone(t *testing.T) {
	ctx := context.Background()
	db := lockServer(t)
	a, err := takeLock(ctx, db, lockTarget)
	if err != nil {
		t.Fatal(err)
	}
	defer a.release()
	if _, err := takeLock(ctx, db, lockTarget); !errors.Is(err, ErrLocked) {
		t.Fatalf("a second process took the lock: %v, want ErrLocked", err)
	}

	// a's connection dies; b takes the lock before a tries again.
	if _, err := db.Exec("KILL ?", a.holder.Load()); err != nil {
		t.Fatal(err)
	}
	discard(a.conn)
	a.conn = nil
	a.holder.Store(0)
	var b *migrationLock
	harness.Eventually(t, 30*time.Second, "the other process took the lock", func() (bool, error) {
		var err error
		b, err = takeLock(ctx, db, lockTarget)
		return err == nil, nil
	})
	defer b.release()
	h := &lockLog{}
	err = a.acquire(ctx, slog.New(h))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("taking the lock back while another process holds it: %v, want ErrLocked", err)
	}
	if h.has("previous lock session") {
		t.Fatalf("the other process's session was taken for this one's: %q", h.msgs)
	}
	if err := b.conn.PingContext(ctx); err != nil || usedBy(t, db, b.name) != int64(b.holder.Load()) {
		t.Fatalf("the other process lost its lock connection (%v) or its lock", err)
	}
	if err := checkIn(t, db, b, b.Epoch()); err != nil {
		t.Fatalf("the other process's fence: %v", err)
	}
	t.Logf("refused: %v", err)
}
