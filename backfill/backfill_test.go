package backfill_test

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/throttle"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

var _ backfill.Throttler = (*throttle.Throttler)(nil)

var (
	srcName, _ = table.ParseName(harness.SourceTable)
	dstName, _ = table.ParseName(harness.TargetTable)
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// open connects the way csmh-sync does (pinned session, short lock waits), as root.
func open(t *testing.T, s *harness.Server) *sql.DB { return openDSN(t, s.DSN("")) }

func openDSN(t *testing.T, dsn string) *sql.DB { return openDSNWith(t, dsn, dbconn.Options{}) }

// openDSNWith is openDSN with options (16 connections unless o says otherwise).
func openDSNWith(t *testing.T, dsn string, o dbconn.Options) *sql.DB {
	t.Helper()
	o.MaxOpenConns = cmp.Or(o.MaxOpenConns, 16)
	db, _, err := dbconn.Open(ctxT(t, time.Minute), dbconn.Endpoint{Role: "test", DSN: dsn}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type env struct {
	src, dst *sql.DB // root's, for the test's own writes and checks
	// toolSrc and toolDst are the backfill's and the checkpoint's, as the harness's users holding exactly the
	// documented grants.
	toolSrc, toolDst *sql.DB
	srcS, dstS       *harness.Server
	store            *checkpoint.Store
	gen              harness.GenResult
	m                *metrics.Metrics
}

// setup starts the servers; dstArgs are extra arguments of a cross-server target.
func setup(t *testing.T, sameServer bool, gen harness.GenOptions, dstArgs ...string) *env {
	t.Helper()
	ctx := ctxT(t, 5*time.Minute)
	e := &env{srcS: harness.StartT(t, harness.Options{}), m: metrics.New(prometheus.NewRegistry())}
	e.dstS = e.srcS
	if sameServer {
		if err := e.srcS.LoadEdxSchema(ctx); err != nil {
			t.Fatal(err)
		}
	} else {
		e.dstS = harness.StartT(t, harness.Options{ExtraArgs: dstArgs})
		if err := e.srcS.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
			t.Fatal(err)
		}
		if err := e.dstS.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true}); err != nil {
			t.Fatal(err)
		}
	}
	e.src, e.dst = open(t, e.srcS), open(t, e.dstS)
	var err error
	if gen.Rows > 0 {
		if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, gen); err != nil {
			t.Fatal(err)
		}
	}
	e.toolSrc, e.toolDst = openDSN(t, e.srcS.SourceDSN()), openDSN(t, e.dstS.TargetDSN())
	e.store = checkpoint.New(e.toolDst, "edxapp_csmh")
	if err := e.store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) backfill(t *testing.T, cfg backfill.Config) *backfill.Backfill {
	t.Helper()
	cfg.SourceTable, cfg.TargetTable = srcName, dstName
	b, err := backfill.New(e.toolSrc, e.toolDst, e.store, e.m, harness.Logger(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) requireEqual(t *testing.T) {
	t.Helper()
	diffs, n, err := diffTables(ctxT(t, 5*time.Minute), e.src, srcName, e.dst, dstName)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Fatalf("%d differences:\n%s", n, strings.Join(diffs, "\n"))
	}
}

// requireCounted checks that the checkpoint counts exactly the rows in the target.
func (e *env) requireCounted(t *testing.T, want int64) {
	t.Helper()
	inTarget, counted := count(t, e.dst, harness.TargetTable), int64(0)
	if err := e.dst.QueryRow("SELECT SUM(rows_copied) FROM edxapp_csmh.csmh_sync_backfill").Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if inTarget != counted || inTarget != want {
		t.Fatalf("target has %d rows, the checkpoint counts %d, want %d", inTarget, counted, want)
	}
}

func count(t *testing.T, db *sql.DB, tbl string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow("SELECT COUNT(*) FROM " + tbl).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// edgeRows are values that stress escaping and exactness: every escaped byte, multibyte text, NULL beside
// empty strings, doubles that text formatting would round, microsecond timestamps.
func insertEdgeRows(t *testing.T, db *sql.DB, fromID int64) int64 {
	t.Helper()
	states := []any{"\x00\n\r\x1a\\'\"\t\b%_`", `\\\'`, "😀 日本語 𠜎 é", "", nil, `{"a": "x = \"y\" \\ z"}`, "'); DROP TABLE x; --", `\N`, "NULL", "tab\there\nnew line\\"}
	grades := []any{0.1 + 0.2, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308, 1.0 / 3.0, nil, 1e21, 123456789012345680.0}
	n := int64(0)
	for i := range max(len(states), len(grades)) {
		id := fromID + int64(i)
		var version any = "v" + fmt.Sprint(i)
		if i%3 == 0 {
			version = nil
		} else if i%3 == 1 {
			version = ""
		}
		if _, err := db.Exec("INSERT INTO "+harness.SourceTable+" (id, version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
			id, version, fmt.Sprintf("2016-02-29 23:59:59.%06d", i*111111%1000000), states[i%len(states)], grades[i%len(grades)], grades[(i+3)%len(grades)], 2147483647-i); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// Test 1: across servers with 4 workers every row arrives exactly, column by column, with either write method.
// LOAD DATA runs at innodb_autoinc_lock_mode 1 (MariaDB's default: 128 KiB statements after a locking read of
// the chunk's target rows) and 2 (MySQL 8's: whole statements).
func TestCrossServerCopyIsExact(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		dstArgs      []string
	}{
		{backfill.WriteInsert, backfill.WriteInsert, nil},
		{backfill.WriteLoadData, backfill.WriteLoadData, nil},
		{backfill.WriteLoadData + " lock mode 2", backfill.WriteLoadData, []string{"--innodb-autoinc-lock-mode=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) { crossServerCopyIsExact(t, tc.method, tc.dstArgs) })
	}
}

func crossServerCopyIsExact(t *testing.T, method string, dstArgs []string) {
	e := setup(t, false, harness.GenOptions{Rows: 50000, Seed: 11, LargeStateEvery: 2000}, dstArgs...)
	rows := e.gen.Rows + insertEdgeRows(t, e.src, e.gen.MaxID+1)
	b := e.backfill(t, backfill.Config{Workers: 4, WriteMethod: method})
	start := time.Now()
	if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Logf("copied %d rows in %s", rows, time.Since(start).Round(time.Millisecond))
	if b.SameServer() {
		t.Fatal("two servers detected as one")
	}
	var name string
	var loads int64
	if err := e.dst.QueryRow("SHOW GLOBAL STATUS LIKE 'Com_load'").Scan(&name, &loads); err != nil {
		t.Fatal(err)
	}
	if (loads > 0) != (method == backfill.WriteLoadData) {
		t.Fatalf("write method %s, but the target ran %d LOAD DATA statements", method, loads)
	}
	e.requireEqual(t)
	e.requireCounted(t, rows)
	p := b.Progress()
	if !p.Done || p.Copied != rows || p.Total != rows || p.Ratio() != 1 || p.ETA != 0 {
		t.Fatalf("progress %+v, want done with %d rows", p, rows)
	}
	if got := metricValue(t, e.m.RowsCopied); got != float64(rows) {
		t.Fatalf("rows metric %g, want %d", got, rows)
	}
	if metricValue(t, e.m.BackfillDone) != 1 || metricValue(t, e.m.Progress) != 1 || metricValue(t, e.m.BytesCopied) < float64(e.gen.Bytes)/2 {
		t.Fatal("done, progress or bytes metric not set")
	}
	// A finished backfill runs again as a no-op.
	if err := e.backfill(t, backfill.Config{Workers: 4, WriteMethod: method}).Run(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.requireCounted(t, rows)
	// Copying the whole range again over rows already there (as after a stream applied them) skips every one:
	// duplicate keys are the one warning accepted.
	if _, err := e.dst.Exec("DROP TABLE edxapp_csmh.csmh_sync_backfill"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := e.backfill(t, backfill.Config{Workers: 2, WriteMethod: method})
	if err := again.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatalf("copy over existing rows: %v", err)
	}
	if n := count(t, e.dst, harness.TargetTable); n != rows {
		t.Fatalf("target has %d rows after the second copy, want %d", n, rows)
	}
	e.requireEqual(t)
}

// Test 2: source and target on one server use the server-side INSERT … SELECT.
func TestSameServerCopyIsExact(t *testing.T) {
	e := setup(t, true, harness.GenOptions{Rows: 30000, Seed: 12})
	rows := e.gen.Rows + insertEdgeRows(t, e.src, e.gen.MaxID+1)
	b := e.backfill(t, backfill.Config{})
	if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !b.SameServer() {
		t.Fatal("same-server path not chosen")
	}
	e.requireEqual(t)
	e.requireCounted(t, rows)
	// Two workers by default: the first start cut the range in two halves (segments 0 and 1; splits by an idle
	// worker later add segments 2 and up).
	var lo, hi, second uint64
	if err := e.dst.QueryRow(`SELECT MIN(start_id), MAX(end_id), (SELECT start_id FROM edxapp_csmh.csmh_sync_backfill WHERE segment = 1)
		FROM edxapp_csmh.csmh_sync_backfill`).Scan(&lo, &hi, &second); err != nil {
		t.Fatal(err)
	}
	if want := lo + (hi-lo+2)/2; second != want {
		t.Fatalf("same-server default plan: segment 1 starts at id %d of [%d, %d], want %d (two equal halves)", second, lo, hi, want)
	}
}

// Test 3: cancelling at a chunk and running again resumes from the checkpoint without double counting.
func TestResumeAfterCancel(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprintf("same_server=%v", same), func(t *testing.T) {
			e := setup(t, same, harness.GenOptions{Rows: 40000, Seed: 13})
			ctx, cancel := context.WithCancel(ctxT(t, 5*time.Minute))
			var chunks atomic.Int64
			var at atomic.Uint64
			b := e.backfill(t, backfill.Config{Workers: 2, Hooks: backfill.Hooks{AfterChunkCopied: func(_ int, next uint64) {
				if chunks.Add(1) == 3 {
					at.Store(next)
					cancel()
				}
			}}})
			if err := b.Run(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("first run: %v, want canceled", err)
			}
			first := b.Progress()
			if first.Done || first.Copied == 0 || first.Copied >= e.gen.Rows {
				t.Fatalf("after the cancel: %+v", first)
			}
			e.requireCounted(t, count(t, e.dst, harness.TargetTable)) // consistent at the stop, too
			b2 := e.backfill(t, backfill.Config{Workers: 2})
			if err := b2.Run(ctxT(t, 5*time.Minute)); err != nil {
				t.Fatal(err)
			}
			e.requireEqual(t)
			e.requireCounted(t, e.gen.Rows)
			if p := b2.Progress(); p.Copied != e.gen.Rows || metricValue(t, e.m.RowsCopied) != float64(e.gen.Rows) {
				t.Fatalf("progress %d and metric %g after resume, want %d", p.Copied, metricValue(t, e.m.RowsCopied), e.gen.Rows)
			}
		})
	}
}

// A chunk's fixed cost (round trips, two commits) above --chunk-time, as on a slow link or a loaded server: the
// copy still moves a hundred rows or more per chunk and crosses an empty id range in a few dozen chunks. Sized
// by time alone, the chunks would shrink to a row each and the empty range of two billion ids would take
// millions of chunks.
func TestChunkTimeBelowTheFixedCost(t *testing.T) {
	for _, same := range []bool{false, true} {
		t.Run(fmt.Sprintf("same_server=%v", same), func(t *testing.T) {
			e := setup(t, same, harness.GenOptions{Rows: 20_000, Seed: 23})
			if _, err := e.src.Exec("INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES (2000000000, UTC_TIMESTAMP(6), '{}', 1)"); err != nil {
				t.Fatal(err)
			}
			rows := e.gen.Rows + 1
			var chunks atomic.Int64
			b := e.backfill(t, backfill.Config{Workers: 2, ChunkTime: time.Microsecond, Hooks: backfill.Hooks{
				AfterChunkCopied: func(int, uint64) { chunks.Add(1) }}})
			if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
				t.Fatal(err)
			}
			e.requireEqual(t)
			e.requireCounted(t, rows)
			// 20,000 rows at 100 a chunk, and about 21 doublings of the span from 1,000 ids to 2e9 per worker.
			if n := chunks.Load(); n > 2*rows/100+100 {
				t.Fatalf("%d chunks for %d rows and one empty range: chunks shrank below a hundred rows", n, rows)
			}
			t.Logf("%d chunks", chunks.Load())
		})
	}
}

// Test 4: rows of 8–16 MiB copy with a 1 MiB budget; statements are split, one fat row at a time.
func TestLargeRowsWithSmallBudget(t *testing.T) {
	for _, method := range []string{backfill.WriteInsert, backfill.WriteLoadData} {
		t.Run(method, func(t *testing.T) { largeRowsWithSmallBudget(t, method) })
	}
}

func largeRowsWithSmallBudget(t *testing.T, method string) {
	e := setup(t, false, harness.GenOptions{Rows: 3000, Seed: 14, LargeStateEvery: -1})
	for i, size := range []int{8 << 20, 12 << 20, 16 << 20} {
		big := strings.Repeat("abc😀\\'\n", size/10)
		if _, err := e.src.Exec("UPDATE "+harness.SourceTable+" SET state = ? WHERE id = ?", big, e.gen.MinID+int64(i)*7); err != nil {
			t.Fatal(err)
		}
	}
	before := comInsert(t, e.dst)
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkBytes: 1 << 20, WriteMethod: method})
	if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
	// ~3 MB of ordinary rows and 36 MiB of fat ones through 256 KiB statements.
	if n := comInsert(t, e.dst) - before; n < 15 {
		t.Fatalf("only %d INSERT or LOAD DATA statements: the chunks were not split", n)
	}
}

// A large row read after smaller ones starts an INSERT of its own: with the target's max_allowed_packet at
// 1 MiB (statements of 512 KiB), rows of 900 KB among ordinary ones copy. Before, a statement of ordinary rows
// with one of them appended passed the limit, and the backfill stopped on the server's error.
func TestLargeRowStartsItsOwnStatement(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 3000, Seed: 15, LargeStateEvery: -1}, "--max-allowed-packet=1M")
	big := strings.Repeat("0123456789", 90_000)
	for _, off := range []int64{350, 1111, 1900, 2600} {
		if _, err := e.src.Exec("UPDATE "+harness.SourceTable+" SET state = ? WHERE id >= ? ORDER BY id LIMIT 1", big, e.gen.MinID+off); err != nil {
			t.Fatal(err)
		}
	}
	// Chunks of a second's rows: every large row comes after others in its chunk.
	b := e.backfill(t, backfill.Config{Workers: 1, WriteMethod: backfill.WriteInsert, ChunkTime: time.Second})
	if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, e.gen.Rows)
}

// A worker holds a bounded number of statements whatever the chunk holds: 64 consecutive 1 MiB rows with a
// 1 MiB budget never have more than a few MiB in flight.
func TestMemoryIsBounded(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 1, Seed: 19, LargeStateEvery: -1})
	state := strings.Repeat("0123456789abcdef", 1<<16)
	for i := range 64 {
		if _, err := e.src.Exec("INSERT INTO "+harness.SourceTable+" (id, created, state, student_module_id) VALUES (?, NOW(6), ?, 1)",
			e.gen.MaxID+1+int64(i), state); err != nil {
			t.Fatal(err)
		}
	}
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkBytes: 1 << 20})
	defer debug.SetGCPercent(debug.SetGCPercent(10)) // the heap then tracks live memory closely
	peak := heapPeak(t)
	if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p := peak(); p > 24<<20 {
		t.Fatalf("heap grew by %d MiB copying 64 MiB with a 1 MiB budget", p>>20)
	}
	e.requireEqual(t)
}

// heapPeak samples the heap until the returned function is called and returns the largest growth seen.
func heapPeak(t *testing.T) func() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var peak uint64
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base {
				peak = max(peak, ms.HeapAlloc-base)
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(stop); p := <-done; t.Logf("heap peak +%d MiB", p>>20); return p }
}

func comInsert(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	n, err := dbconn.Status(context.Background(), db, "Com_insert")
	if err != nil {
		t.Fatal(err)
	}
	l, err := dbconn.Status(context.Background(), db, "Com_load")
	if err != nil {
		t.Fatal(err)
	}
	return n + l
}

// Test 5: a source above --max-threads-running holds the copy (counted as throttled time); above
// --critical-threads-running it stops.
func TestThrottle(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 2000, Seed: 15})
	// A long query keeps Threads_running at 2 (it and the status query) while the test runs.
	busyCtx, stopBusy := context.WithCancel(context.Background())
	busy := make(chan error, 1)
	go func() { _, err := e.src.ExecContext(busyCtx, "SELECT SLEEP(600)"); busy <- err }()
	t.Cleanup(func() { stopBusy(); <-busy })
	harness.Eventually(t, 10*time.Second, "the busy query to run", func() (bool, error) {
		n, err := dbconn.Status(context.Background(), e.src, "Threads_running")
		return n >= 2, err
	})

	thr, err := throttle.New(e.src, nil, throttle.Config{MaxThreadsRunning: 1, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := e.backfill(t, backfill.Config{Throttle: thr})
	start := time.Now()
	if err := b.Run(ctxT(t, 1500*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("throttled run returned %v", err)
	}
	if got := metricValue(t, e.m.ThrottledSecs); got < 1 || got > time.Since(start).Seconds()*4 {
		t.Fatalf("throttled seconds %g after a 1.5 s throttled run", got)
	}
	if n := count(t, e.dst, harness.TargetTable); n != 0 {
		t.Fatalf("%d rows copied while throttled", n)
	}

	crit, err := throttle.New(e.src, nil, throttle.Config{MaxThreadsRunning: 1, CriticalThreadsRunning: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.backfill(t, backfill.Config{Throttle: crit}).Run(ctxT(t, time.Minute)); !errors.Is(err, throttle.ErrCriticalLoad) {
		t.Fatalf("critical load returned %v", err)
	}

	stopBusy()
	harness.Eventually(t, 10*time.Second, "the busy query to end", func() (bool, error) {
		n, err := dbconn.Status(context.Background(), e.src, "Threads_running")
		return n <= 1, err
	})
	// The workers' own status queries run concurrently: a realistic limit lets them through.
	relaxed, err := throttle.New(e.src, nil, throttle.Config{MaxThreadsRunning: 20, CriticalThreadsRunning: 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.backfill(t, backfill.Config{Throttle: relaxed}).Run(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
}

// Pause holds the workers between chunks; a rate limit stretches the copy and counts as throttled time.
func TestPauseAndRateLimit(t *testing.T) {
	// The bucket holds one second of rows and starts full. The first chunk (the initial span of 1,000 ids) holds
	// more rows than that, so the limit makes the copy wait however slowly the machine copies: a copy slower
	// than the rate would otherwise never wait, and the throttled time could be zero.
	const rows, rate = 1200, 300
	e := setup(t, false, harness.GenOptions{Rows: rows, Seed: 15})
	var first int
	if err := e.src.QueryRow("SELECT COUNT(*) FROM " + srcName.String() + " WHERE id < (SELECT MIN(id) FROM " + srcName.String() + ") + 1000").Scan(&first); err != nil {
		t.Fatal(err)
	}
	if first <= rate {
		t.Fatalf("the first chunk holds %d rows, not more than the bucket's %d: the limit might not bind", first, rate)
	}
	b := e.backfill(t, backfill.Config{Workers: 1, MaxRowsPerSecond: rate})
	b.Pause()
	if err := b.Run(ctxT(t, time.Second)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused run returned %v", err)
	}
	if p := b.Progress(); p.Copied != 0 || !p.Paused || metricValue(t, e.m.Paused) != 1 {
		t.Fatalf("paused backfill: %+v", p)
	}
	b.Resume()
	start := time.Now()
	if err := b.Run(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// 1,200 rows at 300/s with a bucket of 300 rows: at least 3 s.
	if took, least := time.Since(start), time.Duration(float64(rows-rate)/rate*float64(time.Second)); took < least {
		t.Fatalf("rate-limited copy took %s, less than %s", took, least)
	}
	if got := metricValue(t, e.m.ThrottledSecs); got < float64(first-rate)/rate*0.9 || metricValue(t, e.m.Paused) != 0 {
		t.Fatalf("throttled seconds %g, want at least the first chunk's wait %.1f s; paused %g", got,
			float64(first-rate)/rate, metricValue(t, e.m.Paused))
	}
	e.requireEqual(t)
}

// POST /rate on a running copy: a limit lifted while a worker waits out its first chunk's debt lets the copy
// finish at once, not when the old limit would have let it; the gauge shows the limit in force.
func TestRateChangeWhileCopying(t *testing.T) {
	const rate = 5
	e := setup(t, false, harness.GenOptions{Rows: 1200, Seed: 16})
	b := e.backfill(t, backfill.Config{Workers: 1, MaxRowsPerSecond: rate})
	if v := metricValue(t, e.m.RateLimit); v != rate {
		t.Fatalf("rate limit gauge %g, want %d", v, rate)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctxT(t, 5*time.Minute)) }()
	harness.Eventually(t, 30*time.Second, "the first chunk committed", func() (bool, error) {
		return b.Progress().Copied > rate, nil
	})
	// The worker now waits for the rows its first chunk took beyond the bucket, at the old limit.
	owed := time.Duration(float64(b.Progress().Copied-rate) / rate * float64(time.Second))
	if owed < 40*time.Second {
		t.Fatalf("the first chunk owes only %s at %d rows/s: too little to tell a lifted limit from the old one", owed, rate)
	}
	b.SetRate(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(owed / 2):
		t.Fatalf("the limit was lifted, and the copy still waits after half of the %s the old limit asked of it", owed)
	}
	if v := metricValue(t, e.m.RateLimit); v != 0 {
		t.Fatalf("rate limit gauge %g after lifting it, want 0", v)
	}
	e.requireEqual(t)
}

// The id boundary: a captured range reaching it is refused; an explicit end id is capped below it.
func TestIDBoundary(t *testing.T) {
	e := setup(t, true, harness.GenOptions{Rows: 3000, Seed: 17})
	err := e.backfill(t, backfill.Config{IDBoundary: uint64(e.gen.MaxID)}).Run(ctxT(t, time.Minute))
	if !errors.Is(err, backfill.ErrRange) {
		t.Fatalf("captured max at the boundary: %v", err)
	}
	boundary := uint64(e.gen.MinID + 1000)
	b := e.backfill(t, backfill.Config{EndID: uint64(e.gen.MaxID), IDBoundary: boundary})
	if err := b.Run(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	var maxID uint64
	if err := e.dst.QueryRow("SELECT MAX(id) FROM " + harness.TargetTable).Scan(&maxID); err != nil || maxID >= boundary {
		t.Fatalf("copied id %d at or above the boundary %d (%v)", maxID, boundary, err)
	}
	if !b.Progress().Done {
		t.Fatal("capped range not done")
	}
}

// A value the target cannot hold is an error, not a row silently changed by INSERT IGNORE.
func TestLossyTargetFails(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 100, Seed: 18})
	// Narrow the target after the schema check would have passed: the copy itself must notice.
	if _, err := e.src.Exec("UPDATE "+harness.SourceTable+" SET version = ? WHERE id = ?", strings.Repeat("v", 200), e.gen.MinID+5); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dst.Exec("ALTER TABLE " + harness.TargetTable + " ADD CONSTRAINT short_version CHECK (LENGTH(version) < 100)"); err != nil {
		t.Fatal(err)
	}
	err := e.backfill(t, backfill.Config{Workers: 1}).Run(ctxT(t, time.Minute))
	if !errors.Is(err, backfill.ErrSchema) {
		t.Fatalf("a row the target rejects: %v, want ErrSchema", err)
	}
	t.Logf("error: %v", err)
	var v sql.NullString
	e.dst.QueryRow("SELECT version FROM "+harness.TargetTable+" WHERE id = ?", e.gen.MinID+5).Scan(&v)
	t.Logf("target version %q", v.String)
	if n := count(t, e.dst, harness.TargetTable); n != 0 {
		t.Fatalf("%d rows of the failed chunk committed", n)
	}
}

// The id range is captured at the first start and kept: a restart without the overrides, after the source has
// grown, copies exactly the range the first start chose (rows above it are the stream's), and --start-id /
// --end-id narrow it.
func TestRangeIsCapturedOnce(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 5000, Seed: 31})
	const lo, hi = 1000, 3000
	ctx, cancel := context.WithCancel(ctxT(t, 5*time.Minute))
	// One segment, cancelled once its first chunk committed: the hook runs before the worker's writer starts
	// the next chunk, so the run cannot finish the range first (with two one-chunk segments it could).
	b := e.backfill(t, backfill.Config{StartID: lo, EndID: hi, Workers: 1, ChunkBytes: 256 << 10,
		Hooks: backfill.Hooks{AfterChunkCopied: func(int, uint64) { cancel() }}})
	if err := b.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want canceled", err)
	}
	var next uint64
	var done bool
	if err := e.dst.QueryRow("SELECT next_id, done FROM edxapp_csmh.csmh_sync_backfill").Scan(&next, &done); err != nil {
		t.Fatal(err)
	}
	if done || next <= lo || next > hi {
		t.Fatalf("after the first run the segment is at %d (done %v): want it cut short inside (%d, %d]", next, done, lo, hi)
	}
	// The source grows: the new rows land above its max.
	if _, err := harness.GenerateCSMH(ctxT(t, time.Minute), e.src, harness.SourceTable, harness.GenOptions{Rows: 500, Seed: 32, StartID: 20_000}); err != nil {
		t.Fatal(err)
	}
	if err := e.backfill(t, backfill.Config{Workers: 2}).Run(ctxT(t, 5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var want, got, outside int64
	if err := e.src.QueryRow("SELECT COUNT(*) FROM "+harness.SourceTable+" WHERE id BETWEEN ? AND ?", lo, hi).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if err := e.dst.QueryRow("SELECT COUNT(*), COALESCE(SUM(id NOT BETWEEN ? AND ?), 0) FROM "+harness.TargetTable, lo, hi).Scan(&got, &outside); err != nil {
		t.Fatal(err)
	}
	if got != want || outside != 0 || want == 0 {
		t.Fatalf("target holds %d rows, %d outside [%d, %d]; the source has %d in it", got, outside, lo, hi, want)
	}
}
