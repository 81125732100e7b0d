package dbconn

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"sync"
	"time"
)

// killTimeout bounds the KILL that ends a session cut off at its deadline.
const killTimeout = 2 * time.Second

// closeTimeout bounds Close's wait for the transaction's end in database/sql (a variable for the tests).
var closeTimeout = CommitTimeout

// Session is one pooled connection held for a transaction whose locks on the app's rows must end at a
// deadline. The driver ends a statement at its context's deadline by closing its socket, and the server
// notices that only when the statement next looks at the socket: a statement waiting for a row lock holds
// the locks it already took until the lock wait ends (innodb_lock_wait_timeout). A Session also ends the
// server's side: when ctx ends before Close, its connection is killed (KILL CONNECTION, through the pool),
// which ends the statement and rolls its transaction back, locks and all.
type Session struct {
	*sql.Conn
	db      *sql.DB
	id      int64
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

// HoldSession takes a connection from db for a transaction that must end, on the server too, when ctx ends.
func HoldSession(ctx context.Context, db *sql.DB) (*Session, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	s := &Session{Conn: conn, db: db, stop: make(chan struct{}), done: make(chan struct{})}
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&s.id); err != nil {
		conn.Close()
		return nil, err
	}
	go s.watch(ctx)
	return s, nil
}

func (s *Session) watch(ctx context.Context) {
	defer close(s.done)
	select {
	case <-s.stop:
	case <-ctx.Done():
		kctx, cancel := context.WithTimeout(context.Background(), killTimeout)
		defer cancel()
		s.kill(kctx)
	}
}

// kill ends the session on the server. The KILL goes through a connection of the pool, which a DNS name or VIP
// may have led to another server since: it is sent only where a session of that id belongs to this user (so
// a user allowed to end others' sessions never ends one of the app's there). A failure leaves the server to
// notice the closed socket, as without the kill.
func (s *Session) kill(ctx context.Context) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	var n int
	err = conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1)", s.id).Scan(&n)
	if err != nil || n != 1 {
		return
	}
	_, _ = conn.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(s.id, 10))
}

// Disarm stops the watch, waiting for a KILL under way: from here on ctx's end no longer kills the session.
// Call it before a COMMIT that must run to its end past ctx.
func (s *Session) Disarm() {
	s.closeMu.Do(func() { close(s.stop) })
	<-s.done
}

// ErrSessionAbandoned is Close's answer when the connection was not handed back within closeTimeout.
var ErrSessionAbandoned = errors.New("the session's server did not answer its transaction's end: its connection is left to the pool to close when the server answers")

// Close disarms the session and hands the connection back to the pool (a killed one is discarded there, as
// the driver finds it closed). Call it after the transaction has ended.
//
// database/sql hands the connection back only once the driver has ended the transaction, and the driver's
// end (the second COMMIT of Commit, or the ROLLBACK after a deadline that came between statements) waits on
// the socket without a deadline: on a server that hangs there, Close would wait as long as the server. It
// waits closeTimeout at most and then leaves the hand-back to a goroutine: the pool counts that connection
// in use until the server answers or the connection breaks, and the caller goes on.
func (s *Session) Close() error {
	s.Disarm()
	done := make(chan error, 1)
	go func() { done <- s.Conn.Close() }()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return ErrSessionAbandoned
	}
}
