package harness

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// StartT starts a server for a test or benchmark and stops it in t.Cleanup. It fails the test if the server
// does not come up; if the test fails, the cleanup logs the last 40 lines of the server's error log.
func StartT(t testing.TB, o Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start mariadbd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mariadbd %s error log (last 40 lines):\n%s", s.Addr(), s.ErrorLogTail(40))
		}
		if err := s.Stop(); err != nil {
			t.Logf("stop mariadbd %s: %v", s.Addr(), err)
		}
	})
	return s
}

// Eventually polls cond every 25 ms until it returns true, failing the test if within passes first. The
// last error cond returned is in the failure message.
func Eventually(t testing.TB, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", within, what, lastErr)
		case <-tick.C:
		}
	}
}

// PurgeBinlogs starts a new binlog file on db's server and purges every older one. MariaDB keeps a binlog until
// its crash-recovery checkpoint has moved past it, so it purges until the new file is the only one left.
func PurgeBinlogs(t testing.TB, db *sql.DB) {
	t.Helper()
	ctx := t.Context()
	if _, err := db.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	newest, _, err := dbconn.CurrentBinlogPos(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "binlogs purged", func() (bool, error) {
		if _, err := db.ExecContext(ctx, "PURGE BINARY LOGS TO '"+newest+"'"); err != nil {
			return false, err
		}
		files, err := dbconn.BinaryLogs(ctx, db)
		return err == nil && len(files) == 1 && files[0].Name == newest, err
	})
}

// RowLocked reports whether another session holds a lock on row id of table: a NOWAIT lock of it fails with
// error 1205 (MariaDB 10.3+). When the row is free, the autocommit statement takes and drops the lock at once.
func RowLocked(db *sql.DB, table string, id any) (bool, error) {
	_, err := db.Exec("SELECT id FROM "+table+" WHERE id = ? FOR UPDATE NOWAIT", id)
	if dbconn.ServerError(err, 1205) {
		return true, nil
	}
	return false, err
}

// FreezeT stops the server (SIGSTOP) and returns the function that lets it go on, once whatever calls it;
// the test's end calls it too.
func (s *Server) FreezeT(t testing.TB) (thaw func()) {
	t.Helper()
	if err := s.Freeze(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if err := s.Thaw(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(thaw)
	return thaw
}
