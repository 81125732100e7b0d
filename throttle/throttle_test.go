package throttle_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/throttle"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// busy keeps n queries running on the server until the returned stop is called.
func busy(t *testing.T, db *sql.DB, n int) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = db.ExecContext(ctx, "SELECT SLEEP(30)") }()
	}
	return func() { cancel(); wg.Wait() }
}

func threadsRunning(db *sql.DB) int64 {
	var k string
	var v int64
	_ = db.QueryRow("SHOW GLOBAL STATUS LIKE 'Threads_running'").Scan(&k, &v)
	return v
}

func TestThreadsRunning(t *testing.T) {
	s := harness.StartT(t, harness.Options{})
	db, _ := s.Open("")
	defer db.Close()
	db.SetMaxOpenConns(20)

	th, err := throttle.New(db, nil, throttle.Config{MaxThreadsRunning: 4, CriticalThreadsRunning: 12, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if waited, err := th.Wait(context.Background()); err != nil || waited > time.Second {
		t.Fatalf("idle server: waited %s, %v", waited, err)
	}

	stop := busy(t, db, 6)
	harness.Eventually(t, 10*time.Second, "6 busy threads", func() (bool, error) { return threadsRunning(db) > 4, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	waited, err := th.Wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || waited < 400*time.Millisecond {
		t.Fatalf("busy server: waited %s, %v; want to wait until the deadline", waited, err)
	}
	// Load drops while waiting: Wait returns by itself.
	done := make(chan error, 1)
	go func() { _, err := th.Wait(context.Background()); done <- err }()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the load dropped")
	}

	stop = busy(t, db, 14)
	defer stop()
	harness.Eventually(t, 10*time.Second, "14 busy threads", func() (bool, error) { return threadsRunning(db) > 12, nil })
	if _, err := th.Wait(context.Background()); !errors.Is(err, throttle.ErrCriticalLoad) {
		t.Fatalf("critical load: %v", err)
	}
}

func TestReplicaLag(t *testing.T) {
	ctx := context.Background()
	primary := harness.StartT(t, harness.Options{})
	replica := harness.StartT(t, harness.Options{})
	pdb, _ := primary.Open("")
	rdb, _ := replica.Open("")
	defer pdb.Close()
	defer rdb.Close()
	if err := replica.Exec(ctx, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_USE_GTID=slave_pos", primary.Port)); err != nil {
		t.Fatal(err)
	}
	if err := replica.Exec(ctx, "START SLAVE"); err != nil {
		t.Fatal(err)
	}
	th, err := throttle.New(pdb, rdb, throttle.Config{MaxReplicaLag: 5 * time.Second, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 30*time.Second, "replica running and current", func() (bool, error) {
		lag, err := throttle.ReplicaLag(ctx, rdb)
		return err == nil && lag == 0, err
	})
	if waited, err := th.Wait(ctx); err != nil || waited > time.Second {
		t.Fatalf("current replica: waited %s, %v", waited, err)
	}
	// A stopped replica reports no lag at all: that must throttle, not pass.
	if err := replica.Exec(ctx, "STOP SLAVE"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := th.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stopped replica: %v, want to keep waiting", err)
	}
	// A server that is no replica is a configuration error.
	if _, err := throttle.ReplicaLag(ctx, pdb); err == nil {
		t.Fatal("primary accepted as replica")
	}
}
