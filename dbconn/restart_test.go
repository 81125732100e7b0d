package dbconn_test

import (
	"context"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// Every SQL connection goes through the login guard (a wrapped socket). go-sql-driver still sees the socket
// (syscall.Conn) and checks a pooled connection before reusing it, so after a server restart the pool's next
// query reconnects instead of failing with "invalid connection" on a connection the server has closed.
func TestPooledConnectionSurvivesServerRestart(t *testing.T) {
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	db, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: s.DSN("")}, dbconn.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.QueryRowContext(qctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("first query on the pool after the server restarted: %v", err)
	}
}
