package runner

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrLocked: another csmh-sync run or backfill already migrates into the same target table.
var ErrLocked = errors.New("another csmh-sync is running")

// lockCheckEvery is how often the holder checks that it still holds the migration lock.
const lockCheckEvery = 5 * time.Second

// migrationLock is a named lock on the target server, held by a dedicated connection for as long as a run or
// backfill lasts: two processes writing one checkpoint would each believe the other's rows are their own.
type migrationLock struct {
	db    *sql.DB
	name  string
	table string
	conn  *sql.Conn // nil while the lock is lost
}

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
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", l.name).Scan(&got); err != nil {
		conn.Close()
		return fmt.Errorf("take the migration lock on the target: %w", err)
	}
	if got.Int64 != 1 {
		var holder sql.NullInt64
		_ = conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", l.name).Scan(&holder)
		conn.Close()
		return fmt.Errorf("%w: another csmh-sync run or backfill (target connection %d) is migrating into %s: stop it first, or, if its host is gone, run KILL %d on the target",
			ErrLocked, holder.Int64, l.table, holder.Int64)
	}
	l.conn = conn
	return nil
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
			var mine sql.NullInt64
			err := l.conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", l.name).Scan(&mine)
			if err == nil && mine.Int64 == 1 {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			l.conn.Close()
			l.conn = nil
		}
		if err := l.acquire(ctx); err != nil {
			if errors.Is(err, ErrLocked) {
				return err
			}
			log.Warn("migration lock lost with its connection; retrying", "err", err)
			continue
		}
		log.Info("migration lock taken again after its connection was lost")
	}
}

func (l *migrationLock) release() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.conn.ExecContext(ctx, "DO RELEASE_LOCK(?)", l.name)
	l.conn.Close()
}
