package runner

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
)

// ErrLocked: another csmh-sync run or backfill already migrates into the same target table.
var ErrLocked = errors.New("another csmh-sync is running")

const (
	// lockCheckEvery is how often the holder checks that it still holds the migration lock.
	lockCheckEvery = 5 * time.Second
	// lockQueryTimeout bounds one lock query, so a half-open connection is noticed.
	lockQueryTimeout = 10 * time.Second
	// staleSessionWait bounds the wait for the server to end this process's previous lock session once it
	// has been killed.
	staleSessionWait = 20 * time.Second
)

// migrationLock is a named lock on the target server, held by a dedicated connection for as long as a run or
// backfill lasts: two processes writing one checkpoint would each believe the other's rows are their own.
//
// It is also the checkpoint's fence (checkpoint.Fence): every checkpoint write checks, inside its own
// transaction, that the lock's holder is still this process's connection and that the lock was not taken
// again since the writer loaded its state. A process whose lock connection died therefore stops writing at
// once, and after it takes the lock again every writer reloads the checkpoint first: another process may
// have held the lock in between and moved the checkpoint on.
//
// The lock connection also holds a second named lock, own, whose name carries a random token of this process:
// no other process ever takes it. When the lock is taken again after a lost connection, the server may not yet
// have noticed that the old session's socket is closed (a target that hung, then resumed) and still hold the
// migration lock for it. The old session is then told from another process's by proof, not by its connection
// id (ids are reused after a server restart): it holds own. It is killed (a user may kill its own
// connections), and the locks are waited for.
type migrationLock struct {
	db    *sql.DB
	name  string
	own   string
	table string
	conn  *sql.Conn // nil while the lock is lost; used by hold's goroutine only

	holder atomic.Uint64 // connection id holding the lock for this process; 0 while lost
	epoch  atomic.Uint64 // times the lock was taken
}

var _ checkpoint.Fence = (*migrationLock)(nil)

// lockName fits MySQL's 64-character limit whatever the table's name.
func lockName(target string) string {
	h := sha256.Sum256([]byte(target))
	return "csmh-sync:" + hex.EncodeToString(h[:16])
}

// ownLockName is the name of a lock only this process takes: the migration lock's name (42 characters), a
// colon and 80 random bits, 63 characters in all.
func ownLockName(main string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return main + ":" + hex.EncodeToString(b)
}

// takeLock takes the lock or fails at once with who holds it.
func takeLock(ctx context.Context, db *sql.DB, target string) (*migrationLock, error) {
	name := lockName(target)
	l := &migrationLock{db: db, name: name, own: ownLockName(name), table: target}
	// No session holds a new own lock, so the first take has no previous session to end, and nothing to log.
	if err := l.acquire(ctx, slog.New(slog.DiscardHandler)); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *migrationLock) acquire(ctx context.Context, log *slog.Logger) error {
	cctx, cancel := context.WithTimeout(ctx, lockQueryTimeout) // a hung server accepts the connection and never greets
	conn, err := l.db.Conn(cctx)
	cancel()
	if err != nil {
		return fmt.Errorf("take the migration lock on the target: %w", err)
	}
	id, err := l.take(ctx, conn, log)
	if err != nil {
		discard(conn) // with any lock it took
		return err
	}
	l.conn = conn
	l.epoch.Add(1)
	l.holder.Store(id)
	return nil
}

// take takes own and then the migration lock on conn and returns conn's id. Own is taken first, so a session
// of this process that holds the migration lock always holds own too.
func (l *migrationLock) take(ctx context.Context, conn *sql.Conn, log *slog.Logger) (uint64, error) {
	qctx, cancel := context.WithTimeout(ctx, lockQueryTimeout+2*staleSessionWait)
	defer cancel()
	var id uint64
	var got sql.NullInt64
	if err := conn.QueryRowContext(qctx, "SELECT CONNECTION_ID(), GET_LOCK(?, 0)", l.own).Scan(&id, &got); err != nil {
		return 0, fmt.Errorf("take the migration lock on the target: %w", err)
	}
	var wait time.Duration
	var stale sql.NullInt64 // this process's previous lock session, if the server still kept it
	if got.Int64 != 1 {
		// Only this process's lock connections take own: the session holding it is one of them, discarded, that
		// the server has not ended yet.
		var holder sql.NullInt64
		if err := conn.QueryRowContext(qctx, "SELECT IS_USED_LOCK(?), IS_USED_LOCK(?)", l.own, l.name).Scan(&stale, &holder); err != nil {
			return 0, fmt.Errorf("take the migration lock on the target: %w", err)
		}
		if stale.Valid {
			log.Warn("the target still keeps this process's previous lock session; ending it",
				"connection", stale.Int64, "holds_migration_lock", holder == stale)
			if _, err := conn.ExecContext(qctx, "KILL CONNECTION ?", stale.Int64); err != nil && !dbconn.ServerError(err, 1094) { // 1094: ended meanwhile
				return 0, fmt.Errorf("end this process's previous lock session (target connection %d): %w", stale.Int64, err)
			}
			if holder == stale {
				wait = staleSessionWait // the migration lock goes with the session, as own does
			}
		}
		if err := conn.QueryRowContext(qctx, "SELECT GET_LOCK(?, ?)", l.own, int(staleSessionWait/time.Second)).Scan(&got); err != nil {
			return 0, fmt.Errorf("take the migration lock on the target: %w", err)
		}
		if got.Int64 != 1 {
			return 0, fmt.Errorf("take the migration lock on the target: this process's previous lock session (target connection %d) did not end within %s",
				stale.Int64, staleSessionWait)
		}
	}
	if err := conn.QueryRowContext(qctx, "SELECT GET_LOCK(?, ?)", l.name, int(wait/time.Second)).Scan(&got); err != nil {
		return 0, fmt.Errorf("take the migration lock on the target: %w", err)
	}
	if got.Int64 == 1 {
		return id, nil
	}
	// This connection holds own, so the holder is not a session of this process unless it is the killed one
	// that has not ended yet.
	var holder sql.NullInt64
	if err := conn.QueryRowContext(qctx, "SELECT IS_USED_LOCK(?)", l.name).Scan(&holder); err != nil {
		return 0, fmt.Errorf("take the migration lock on the target: %w", err)
	}
	switch {
	case !holder.Valid:
		return 0, errors.New("take the migration lock on the target: it was released while this process asked for it; retry")
	case stale.Valid && holder == stale:
		return 0, fmt.Errorf("take the migration lock on the target: this process's previous lock session (target connection %d) did not end within %s",
			stale.Int64, staleSessionWait)
	}
	return 0, fmt.Errorf("%w: another csmh-sync run or backfill (target connection %d) is migrating into %s: stop it first, or, if its host is gone, run KILL %d on the target",
		ErrLocked, holder.Int64, l.table, holder.Int64)
}

// discard closes a connection that may still hold the lock without returning it to the pool, where another
// query could pick it up and keep the lock alive.
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	c.Close()
}

// hold checks every few seconds that the lock is still held. A lost connection loses the lock: it is taken
// again, and if another process took it meanwhile, hold returns ErrLocked so this one stops.
func (l *migrationLock) hold(ctx context.Context, log *slog.Logger) error {
	t := time.NewTicker(lockCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if l.conn != nil {
			qctx, cancel := context.WithTimeout(ctx, lockQueryTimeout)
			var mine sql.NullInt64
			err := l.conn.QueryRowContext(qctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", l.name).Scan(&mine)
			cancel()
			if err == nil && mine.Int64 == 1 {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			l.holder.Store(0) // checkpoint writes fail from here until the lock is taken again
			discard(l.conn)
			l.conn = nil
			log.Warn("migration lock lost; checkpoint writes wait until it is taken again", "err", err)
		}
		if err := l.acquire(ctx, log); err != nil {
			if errors.Is(err, ErrLocked) {
				return err
			}
			log.Warn("migration lock not taken again yet; retrying", "err", err)
			continue
		}
		log.Info("migration lock taken again; writers reload the checkpoint before they write")
	}
}

// Epoch implements checkpoint.Fence.
func (l *migrationLock) Epoch() uint64 { return l.epoch.Load() }

// Check implements checkpoint.Fence: in tx, the lock's holder must be this process's lock connection, taken
// in epoch.
func (l *migrationLock) Check(ctx context.Context, tx checkpoint.Execer, epoch uint64) error {
	var holder sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", l.name).Scan(&holder); err != nil {
		return fmt.Errorf("check the migration lock: %w", err)
	}
	mine := l.holder.Load()
	switch {
	case mine == 0 || !holder.Valid || uint64(holder.Int64) != mine:
		return fmt.Errorf("%w: the lock on %s is held by connection %d, not this process's (%d)", checkpoint.ErrFenced, l.table, holder.Int64, mine)
	case epoch != l.epoch.Load():
		return fmt.Errorf("%w: the lock on %s was taken again since this writer loaded its checkpoint", checkpoint.ErrFenced, l.table)
	}
	return nil
}

func (l *migrationLock) release() {
	if l.conn == nil {
		return
	}
	l.holder.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.conn.ExecContext(ctx, "DO RELEASE_LOCK(?), RELEASE_LOCK(?)", l.name, l.own)
	l.conn.Close()
}
