package throttle_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/throttle"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

func open(t *testing.T, s *harness.Server) *sql.DB {
	t.Helper()
	return openDSN(t, s.DSN(""))
}

func openDSN(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, _, err := dbconn.Open(context.Background(), dbconn.Endpoint{Role: "test", DSN: dsn}, dbconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestNewValidates(t *testing.T) {
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	db := open(t, s)
	for _, cfg := range []throttle.Config{{MaxThreadsRunning: -1}, {MaxThreadsRunning: 10, CriticalThreadsRunning: 5}, {MaxReplicaLag: -time.Second}} {
		if _, err := throttle.New(db, nil, cfg); !errors.Is(err, throttle.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	if _, err := throttle.New(nil, nil, throttle.Config{}); !errors.Is(err, throttle.ErrConfig) {
		t.Errorf("New without a source = %v", err)
	}
}

func TestThreadsRunning(t *testing.T) {
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	db := open(t, s)
	threads := func() int64 {
		n, err := dbconn.Status(context.Background(), db, "Threads_running")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	quiet, err := throttle.New(db, nil, throttle.Config{MaxThreadsRunning: 1, CriticalThreadsRunning: 1, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "an idle server", func() (bool, error) { return threads() <= 1, nil })
	if waited, err := quiet.Wait(context.Background()); err != nil || waited > time.Second {
		t.Fatalf("idle server: waited %s, %v", waited, err)
	}

	// A long query keeps Threads_running at 2 (it and the status query).
	busyCtx, stopBusy := context.WithCancel(context.Background())
	busy := make(chan error, 1)
	go func() { _, err := db.ExecContext(busyCtx, "SELECT SLEEP(600)"); busy <- err }()
	t.Cleanup(func() { stopBusy(); <-busy })
	// Wait for the query itself, not for Threads_running ≥ 2, which another short-lived thread can also make.
	harness.Eventually(t, 10*time.Second, "the busy query to run", func() (bool, error) {
		var n int
		err := db.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(600)' AND STATE = 'User sleep'").Scan(&n)
		return n > 0 && threads() >= 2, err
	})

	thr, err := throttle.New(db, nil, throttle.Config{MaxThreadsRunning: 1, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	waited, err := thr.Wait(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait above the limit returned %v", err)
	}
	if waited < 900*time.Millisecond || waited > time.Since(start) {
		t.Fatalf("waited %s until a 1 s deadline", waited)
	}
	if _, err := quiet.Wait(context.Background()); !errors.Is(err, throttle.ErrCriticalLoad) {
		t.Fatalf("above the critical limit: %v", err)
	}
	// The load drops while a Wait polls: it returns by itself.
	done := make(chan error, 1)
	go func() { _, err := thr.Wait(context.Background()); done <- err }()
	stopBusy()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the load dropped")
	}
}

func TestReplicaLag(t *testing.T) {
	primary := harness.StartT(t, harness.Options{})
	replica := harness.StartT(t, harness.Options{})
	pdb, rdb := open(t, primary), open(t, replica)
	if _, err := throttle.ReplicaLag(context.Background(), pdb); !errors.Is(err, throttle.ErrNotReplica) {
		t.Fatalf("lag of a primary: %v", err)
	}
	if _, err := rdb.Exec(fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_USE_GTID=slave_pos", primary.Port)); err != nil {
		t.Fatal(err)
	}
	if _, err := rdb.Exec("START SLAVE"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Exec("STOP SLAVE") })
	// The throttle reads the lag as a user holding only the documented replica grant; the test's own setup and
	// replication control stay root's.
	v, err := replica.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.CreateUser(context.Background(), "csmh_replica", "", harness.GrantSpecs(preflight.ReplicaGrants(v))...); err != nil {
		t.Fatal(err)
	}
	root := rdb
	rdb = openDSN(t, replica.UserDSN("csmh_replica", "", ""))
	if _, err := rdb.Exec("STOP SLAVE"); err == nil {
		t.Fatal("the replica user may stop replication: it holds more than the documented grant")
	}
	harness.Eventually(t, 30*time.Second, "the replica to connect", func() (bool, error) {
		lag, err := throttle.ReplicaLag(context.Background(), rdb)
		return lag == 0, err
	})
	thr, err := throttle.New(pdb, rdb, throttle.Config{MaxReplicaLag: 5 * time.Second, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if waited, err := thr.Wait(context.Background()); err != nil || waited > time.Second {
		t.Fatalf("replica in sync: waited %s, %v", waited, err)
	}
	// A replica the daemon could not reach at its start is opened at a later check: each failure to open it
	// is a replica error, which the checks within the poll interval share instead of each dialling again, and
	// once it opens its lag is read as any replica's.
	var opens atomic.Int32
	lazy, err := throttle.New(pdb, nil, throttle.Config{MaxReplicaLag: 5 * time.Second, Interval: 200 * time.Millisecond,
		OpenReplica: func(context.Context) (*sql.DB, error) {
			if opens.Add(1) == 1 {
				return nil, errors.New("dial tcp 10.0.0.9:3306: connect: connection refused")
			}
			return rdb, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lazy.Wait(context.Background()); !errors.Is(err, throttle.ErrReplica) {
		t.Fatalf("Wait with the replica unreachable returned %v, want a replica error", err)
	}
	harness.Eventually(t, 10*time.Second, "the replica opened at a later check", func() (bool, error) {
		_, err := lazy.Wait(context.Background())
		if err != nil && !errors.Is(err, throttle.ErrReplica) {
			return false, err
		}
		return err == nil, nil
	})
	if waited, err := lazy.Wait(context.Background()); err != nil || waited > time.Second {
		t.Fatalf("replica reached and in sync: waited %s, %v", waited, err)
	}
	if n := opens.Load(); n != 2 {
		t.Fatalf("the replica was opened %d times, want twice (a failure shared by the checks after it, then once for good)", n)
	}
	// A stopped SQL thread has no lag figure: the throttle holds the copy rather than guess.
	if _, err := root.Exec("STOP SLAVE SQL_THREAD"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "the lag to become unknown", func() (bool, error) {
		lag, err := throttle.ReplicaLag(context.Background(), rdb)
		return lag < 0, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := thr.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with replication stopped returned %v", err)
	}
}

// TestRedoFill holds the copy while the target's redo log is fuller than the limit and lets it go once InnoDB
// has flushed: a server whose page cleaner flushes 100 pages a second at most when idle keeps a redo log
// filled by a burst of writes full for many seconds, until the test makes it flush everything.
func TestRedoFill(t *testing.T) {
	s := harness.StartT(t, harness.Options{BinlogOff: true, ExtraArgs: []string{"--innodb-log-file-size=32M",
		"--innodb-io-capacity=100", "--innodb-io-capacity-max=100", "--innodb-adaptive-flushing=OFF",
		"--innodb-max-dirty-pages-pct=90", "--innodb-max-dirty-pages-pct-lwm=0"}})
	db := open(t, s)
	// A second server as the source counts the status queries the guard sends it (Threads_running).
	other := open(t, harness.StartT(t, harness.Options{BinlogOff: true}))
	ctx := context.Background()
	statusQueries := func() int64 {
		n, err := dbconn.Status(ctx, other, "Com_show_status")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	r, ok, err := throttle.ReadRedo(ctx, db)
	if err != nil || !ok {
		t.Fatalf("ReadRedo on MariaDB: %+v, %v, %v", r, ok, err)
	}
	var limit int64
	if err := db.QueryRow("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Innodb_checkpoint_max_age'").Scan(&limit); err != nil {
		t.Fatal(err)
	}
	if r.Limit != limit || r.Limit < 20<<20 || r.Limit > 32<<20 {
		t.Fatalf("redo limit %d, want Innodb_checkpoint_max_age %d (about 0.8 of the 32 MiB log)", r.Limit, limit)
	}
	f, err := throttle.ReadFlushing(ctx, db)
	if err != nil || !f.Visible || f.IOCapacity != 100 || f.IOCapacityMax != 100 || !f.NoBackgroundFlush() {
		t.Fatalf("ReadFlushing on MariaDB with lwm 0 and io capacity 100: %+v, %v; want no background flushing", f, err)
	}
	// About 12 MiB of redo: half the limit.
	for _, q := range []string{"CREATE DATABASE redo", "CREATE TABLE redo.t (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		if _, err := db.Exec("INSERT INTO redo.t VALUES (?, REPEAT('x', 1 << 20))", i); err != nil {
			t.Fatal(err)
		}
	}
	if r, _, _ := throttle.ReadRedo(ctx, db); r.Fill() < 0.35 {
		t.Fatalf("after 12 MiB of writes the redo log is at %.2f of its limit, want over 0.35", r.Fill())
	}
	// At most 0.1 flushed per second from 0.35: the log stays above 0.2 for seconds by itself. Above the limit
	// chunk starts trickle, one per 100 ms for all callers: Waits back to back for a second let ten or so
	// through, each counted as a trickle, never two within 100 ms.
	var trickled atomic.Int64
	full, err := throttle.New(other, nil, throttle.Config{MaxThreadsRunning: 1000, Target: db, MaxRedoFill: 0.2, OnTrickle: func() { trickled.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	queried := statusQueries()
	var passes []time.Time
	start := time.Now()
	for time.Since(start) < time.Second {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := full.Wait(wctx)
		cancel()
		if err != nil {
			t.Fatalf("Wait above the limit after %d chunk starts: %v; want one start every 100 ms, not none", len(passes), err)
		}
		passes = append(passes, time.Now())
	}
	if got := int(trickled.Load()); got != len(passes) || got < 2 {
		t.Fatalf("above the limit %d Waits returned, %d of them as trickles; want every one a trickle, and more than one in a second", len(passes), got)
	}
	for i := 1; i < len(passes); i++ {
		if gap := passes[i].Sub(passes[i-1]); gap < throttle.RedoTrickle {
			t.Fatalf("above the limit two chunk starts %s apart, want %s or more", gap, throttle.RedoTrickle)
		}
	}
	// Above the limit the source is asked for its load only when the trickle's slot is free, once per chunk
	// start, not at every 20 ms poll of the log.
	if asked := statusQueries() - queried - 1; asked > int64(len(passes)) {
		t.Fatalf("above the limit %d chunk starts asked the source for Threads_running %d times; want once each", len(passes), asked)
	}
	var roomyTrickled atomic.Int64
	roomy, err := throttle.New(db, nil, throttle.Config{Target: db, MaxRedoFill: 0.9, OnTrickle: func() { roomyTrickled.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := roomy.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := roomyTrickled.Load(); n != 0 {
		t.Fatalf("under the limit %d chunk starts were trickles, want none: they go at once", n)
	}
	// The server flushes everything: the checkpoint advances and chunk starts go at once again.
	if _, err := db.Exec("SET GLOBAL innodb_max_dirty_pages_pct = 0"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		r, _, err := throttle.ReadRedo(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if r.Fill() < 0.2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not flush: redo at %.2f of its limit after 60 s", r.Fill())
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a deadline-bounded wait
	}
	before := trickled.Load()
	time.Sleep(30 * time.Millisecond) // past redoFresh: the next Wait reads the log again, not its last reading
	for range 3 {
		if _, err := full.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := trickled.Load() - before; n != 0 {
		t.Fatalf("after the flush %d of 3 chunk starts were trickles, want none", n)
	}
	for _, bad := range []float64{-0.1, 1, 1.5} {
		if _, err := throttle.New(db, nil, throttle.Config{Target: db, MaxRedoFill: bad}); !errors.Is(err, throttle.ErrConfig) {
			t.Errorf("MaxRedoFill %v: %v, want ErrConfig", bad, err)
		}
	}
	if _, err := throttle.New(db, nil, throttle.Config{MaxRedoFill: 0.5}); !errors.Is(err, throttle.ErrConfig) {
		t.Errorf("MaxRedoFill without a target: %v, want ErrConfig", err)
	}
}

// The latency guard on a real server: while the target's commits are slow — here the probe's row is locked by
// another transaction, so every probe waits for it — chunk starts wait a pause that grows; once commits are
// fast again the pause goes and Wait returns at once. A probe that fails (its table gone) leaves the copy
// unpaced and is reported.
func TestLatencyGuard(t *testing.T) {
	s := harness.StartT(t, harness.Options{BinlogOff: true})
	db := open(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, q := range []string{"CREATE DATABASE probe", "CREATE TABLE probe.t (id TINYINT PRIMARY KEY, at DATETIME(6) NOT NULL)",
		"INSERT INTO probe.t VALUES (1, UTC_TIMESTAMP(6))"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var last throttle.Latency
	judged := 0
	var quietHeld time.Duration // the longest wait of a chunk start in a quiet period
	thr, err := throttle.New(db, nil, throttle.Config{MaxLatencyRise: 500 * time.Millisecond,
		Probe: func(ctx context.Context) error {
			_, err := db.ExecContext(ctx, "INSERT INTO probe.t VALUES (1, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE at = UTC_TIMESTAMP(6)")
			return err
		},
		OnLatency: func(l throttle.Latency) {
			mu.Lock()
			defer mu.Unlock()
			last, judged = l, judged+1
			if l.Quiet {
				quietHeld = max(quietHeld, l.Pause)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	throttle.SetQuietEvery(thr, time.Hour) // one quiet period, at the start: none comes between the steps below
	state := func() (throttle.Latency, int) {
		mu.Lock()
		defer mu.Unlock()
		return last, judged
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		thr.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	// The quiet period at the start holds chunk starts while it times the idle server; then fast commits, no
	// pause.
	harness.Eventually(t, 30*time.Second, "five probes of an idle server after the quiet period", func() (bool, error) {
		l, n := state()
		return !l.Quiet && n >= int(1500*time.Millisecond/(100*time.Millisecond))+5, nil
	})
	mu.Lock()
	held := quietHeld
	mu.Unlock()
	if held < time.Second {
		t.Fatalf("chunk starts waited at most %s in the quiet period at the start, want about its 1.5 s", held)
	}
	if l, _ := state(); l.Pause != 0 || l.Err != nil {
		t.Fatalf("an idle server's commits gave a pause: %+v", l)
	}
	if waited, err := thr.Wait(ctx); err != nil || waited > time.Second {
		t.Fatalf("Wait on an idle server took %s (%v), want it at once", waited, err)
	}
	// Slow commits: the probe's row locked.
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	for _, q := range []string{"BEGIN", "UPDATE probe.t SET at = UTC_TIMESTAMP(6) WHERE id = 1"} {
		if _, err := lock.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	harness.Eventually(t, time.Minute, "a pause while commits wait", func() (bool, error) {
		l, _ := state()
		return l.Pause >= 20*time.Millisecond, nil
	})
	if l, _ := state(); l.Rise < time.Second {
		t.Fatalf("commits waiting for a lock measured a rise of %s, want about the probe's 2 s timeout", l.Rise)
	}
	if waited, err := thr.Wait(ctx); err != nil || waited < 20*time.Millisecond {
		t.Fatalf("Wait while commits are slow took %s (%v), want the pause", waited, err)
	}
	if _, err := lock.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the pause to go once commits are fast", func() (bool, error) {
		l, _ := state()
		return l.Pause == 0, nil
	})
	if waited, err := thr.Wait(ctx); err != nil || waited > time.Second {
		t.Fatalf("Wait after the pause went took %s (%v), want it at once", waited, err)
	}
	// The probe's table gone: reported, and no pause.
	if _, err := db.Exec("DROP TABLE probe.t"); err != nil {
		t.Fatal(err)
	}

	harness.Eventually(t, 30*time.Second, "the failing probe reported", func() (bool, error) {
		l, _ := state()
		return l.Err != nil, nil
	})
	if l, _ := state(); l.Pause != 0 {
		t.Fatalf("a failing probe left a pause: %+v", l)
	}
}
