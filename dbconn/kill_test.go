package dbconn_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A session whose context ends is killed on the server; one closed first is not. A KILL goes through another
// connection of the pool, which after a failover may lead to another server: it never ends a session of
// another user there (the app's, for a user allowed to end any).
func TestSessionKilledOnlyAtItsDeadline(t *testing.T) {
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	root, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	tool, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: s.SourceDSN()}, dbconn.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer tool.Close()
	alive := func(id int64) bool {
		var n int
		if err := root.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	// Its context ends first: killed.
	dctx, cancel := context.WithCancel(ctx)
	sess, err := dbconn.HoldSession(dctx, tool)
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := sess.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	cancel()
	harness.Eventually(t, 10*time.Second, "the session killed", func() (bool, error) { return !alive(id), nil })
	sess.Close()

	// Closed first: the connection lives on in the pool.
	dctx, cancel = context.WithCancel(ctx)
	sess, err = dbconn.HoldSession(dctx, tool)
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	sess.Close()
	cancel()
	var n int
	if err := tool.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil || n != 1 || !alive(id) {
		t.Fatalf("a session closed before its context ended was killed (%d, %v)", n, err)
	}

	// Another user's session of the same id is never killed, even for a user allowed to kill it (root's pool
	// kills here, the session named is the tool user's).
	appConn, err := tool.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer appConn.Close()
	var appID int64
	if err := appConn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&appID); err != nil {
		t.Fatal(err)
	}
	held, err := root.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel = context.WithCancel(ctx)
	w := dbconn.WatchSessionID(dctx, root, held, appID)
	cancel()
	w.Close() // waits for the kill attempt
	if !alive(appID) {
		t.Fatal("root's kill ended the tool user's session: a session of another user was killed")
	}
}

// A session whose server hangs after its COMMIT was answered is let go at closeTimeout: Close does not wait
// for the server, and the pool has the connection back once the server answers.
func TestSessionCloseDoesNotWaitForAHungServer(t *testing.T) {
	ctx := context.Background()
	defer dbconn.SetSessionCloseTimeout(time.Second)()
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	tool, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: s.DSN("")}, dbconn.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer tool.Close()
	sess, err := dbconn.HoldSession(ctx, tool)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := sess.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "COMMIT"); err != nil { // answered, as in dbconn.Commit
		t.Fatal(err)
	}
	thaw := s.FreezeT(t)
	go func() { _ = tx.Commit() }() // the driver's own COMMIT, sent to the hung server
	closed := make(chan error, 1)
	go func() { closed <- sess.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, dbconn.ErrSessionAbandoned) {
			t.Fatalf("Close on a hung server = %v, want ErrSessionAbandoned", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close still waits for the hung server 20 s on, closeTimeout being 1 s")
	}
	thaw()
	harness.Eventually(t, 20*time.Second, "the connection back in the pool", func() (bool, error) {
		return tool.Stats().InUse == 0, nil
	})
	if err := tool.PingContext(ctx); err != nil {
		t.Fatalf("the pool after the server came back: %v", err)
	}
}
