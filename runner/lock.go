package runner

import (
	"context"
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
)

// ErrLocked: another csmh-sync run or backfill already migrates into the same target table.
var ErrLocked = errors.New("another csmh-sync is running")

const (
	// lockCheckEvery is how often the holder checks that it still holds the migration lock.
	lockCheckEvery = 5 * time.Second
	// lockQueryTimeout bounds one lock query, so a half-open connection is noticed.
	lockQueryTimeout = 10 * time.Second
)

// migrationLock is a named lock on the target server, held by a dedicated connection for as long as a run or
// backfill lasts: two processes writing one checkpoint would each believe the other's rows are their own.
//
// It is also the checkpoint's fence (checkpoint.Fence): every checkpoint write checks, inside its own
// transaction, that the lock's holder is still this process's connection and that the lock was not taken
// again since the writer loaded its state. A process whose lock connection died therefore stops writing at
// once, and after it takes the lock again every writer reloads the checkpoint first: another process may
// have held the lock in between and moved the checkpoint on.
type migrationLock struct {
	db    *sql.DB
	name  string
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

// takeLock takes the lock or fails at once with who holds it.
func takeLock(ctx context.Context, db *sql.DB, target string) (*migrationLock, error) {
	l := &migrationLock{db: db, name: lockName(target), table: target}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *migrationLock) acquire(ctx context.Context) error {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("take the migration lock on the target: %w", err)
	}
	qctx, cancel := context.WithTimeout(ctx, lockQueryTimeout)
	defer cancel()
	var got sql.NullInt64
	var id uint64
	if err := conn.QueryRowContext(qctx, "SELECT GET_LOCK(?, 0), CONNECTION_ID()", l.name).Scan(&got, &id); err != nil {
		discard(conn)
		return fmt.Errorf("take the migration lock on the target: %w", err)
	}
	if got.Int64 != 1 {
		var holder sql.NullInt64
		_ = conn.QueryRowContext(qctx, "SELECT IS_USED_LOCK(?)", l.name).Scan(&holder)
		conn.Close()
		return fmt.Errorf("%w: another csmh-sync run or backfill (target connection %d) is migrating into %s: stop it first, or, if its host is gone, run KILL %d on the target",
			ErrLocked, holder.Int64, l.table, holder.Int64)
	}
	l.conn = conn
	l.epoch.Add(1)
	l.holder.Store(id)
	return nil
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
		if err := l.acquire(ctx); err != nil {
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
	_, _ = l.conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", l.name)
	l.conn.Close()
}
