package dbconn

import (
	"context"
	"database/sql"
	"time"
)

// SetSessionCloseTimeout sets how long Session.Close waits, until the test ends.
func SetSessionCloseTimeout(d time.Duration) (restore func()) {
	old := closeTimeout
	closeTimeout = d
	return func() { closeTimeout = old }
}

// WatchSessionID watches ctx as HoldSession does, for a session id the test names instead of the held one.
func WatchSessionID(ctx context.Context, db *sql.DB, conn *sql.Conn, id int64) *Session {
	s := &Session{Conn: conn, db: db, id: id, stop: make(chan struct{}), done: make(chan struct{})}
	go s.watch(ctx)
	return s
}
