package bench

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// replicator starts csmh-sync's stream in-process from pos and returns it with a stop function.
func replicator(b *testing.B, src, dst *harness.Server, pos string) (*replication.Replicator, func()) {
	b.Helper()
	ctx := context.Background()
	sdb, scfg, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: src.DSN("")}, dbconn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ddb, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: dst.DSN("")}, dbconn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	store := checkpoint.New(ddb, "edxapp_csmh")
	if err := store.Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := store.Init(ctx, checkpoint.State{SourceTable: srcT, TargetTable: dstT, Flavor: "mariadb", GTID: pos}); err != nil {
		b.Fatal(err)
	}
	sn, _ := table.ParseName(srcT)
	tn, _ := table.ParseName(dstT)
	r, err := replication.New(sdb, ddb, store, metrics.Discard(), slog.New(slog.DiscardHandler), replication.Config{
		Source: scfg, ServerID: 4242, Flavor: "mariadb", SourceTable: sn, TargetTable: tn, BatchRows: batchRows(), ApplyLanes: envInt("CSMH_BENCH_LANES")})
	if err != nil {
		b.Fatal(err)
	}
	start, _ := gtid.Parse("mariadb", pos)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx, start) }()
	return r, func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("replicator: %v", err)
		}
		sdb.Close()
		ddb.Close()
	}
}

func executed(b *testing.B, db *sql.DB) *gtid.Set {
	b.Helper()
	var s string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&s); err != nil {
		b.Fatal(err)
	}
	g, err := gtid.Parse("mariadb", s)
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkReplicationApply applies a binlog of ≥1M row changes with csmh-sync and, in the same run, replays the
// same binlog files with `mariadb-binlog | mariadb`, the server's own apply path.
func BenchmarkReplicationApply(b *testing.B) {
	n := rowsEnv()
	src := start(b, harness.Options{})
	replay := start(b, harness.Options{BinlogOff: true, ExtraArgs: []string{"--gtid-strict-mode=0"}})
	dst := start(b, harness.Options{BinlogOff: true})
	ctx, cancel := ctxT(time.Hour)
	defer cancel()
	for _, c := range []struct {
		s *harness.Server
		o harness.SchemaOptions
	}{{src, harness.SchemaOptions{SkipTarget: true}}, {replay, harness.SchemaOptions{SkipTarget: true}}, {dst, harness.SchemaOptions{SkipSource: true}}} {
		if err := c.s.LoadEdxSchemaWith(ctx, c.o); err != nil {
			b.Fatal(err)
		}
	}
	sdb, _ := src.Open("")
	defer sdb.Close()
	mustExec(b, sdb, "FLUSH BINARY LOGS")
	var firstFile string
	var pos int64
	var g1, g2, g3 any
	if err := sdb.QueryRow("SHOW MASTER STATUS").Scan(&firstFile, &pos, &g1, &g2); err != nil {
		if err := sdb.QueryRow("SHOW MASTER STATUS").Scan(&firstFile, &pos, &g1, &g2, &g3); err != nil {
			b.Fatal(err)
		}
	}
	startPos := executed(b, sdb).String()
	startFile := gtid.FilePos{File: firstFile, Pos: uint64(pos)}.String()
	gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: n, Seed: 9, BatchRows: 100, LargeStateEvery: -1})
	if err != nil {
		b.Fatal(err)
	}
	wantFile := filePos(b, sdb) // the end of the last generated transaction
	mustExec(b, sdb, "FLUSH BINARY LOGS")
	files, _ := filepath.Glob(filepath.Join(src.Dir, "data", "mysql-bin.[0-9]*"))
	sort.Strings(files)
	var use []string
	for _, f := range files {
		if filepath.Base(f) >= firstFile {
			use = append(use, f)
		}
	}

	// Each path runs CSMH_BENCH_REPEAT times (default 2), in interleaved rounds, and keeps its best time.
	rdb, _ := replay.Open("")
	defer rdb.Close()
	ddb, _ := dst.Open("")
	defer ddb.Close()
	repeats := max(envInt("CSMH_BENCH_REPEAT"), 0)
	if repeats == 0 {
		repeats = 2
	}
	want := executed(b, sdb)
	var replayTook time.Duration
	took := map[string]time.Duration{}
	// csmh-sync applies the same binlog following GTIDs and, as on a MySQL source with gtid_mode=OFF, its
	// binlog file and offset (--position file).
	modes := []struct {
		name, from string
		until      *gtid.Set
	}{
		{"csmh-sync stream apply", startPos, want},
		{"csmh-sync stream apply, file/position", startFile, wantFile},
	}
	for round := range repeats {
		// The server's own apply path.
		mustExec(b, rdb, "TRUNCATE TABLE "+srcT)
		quiesce(b, sdb, rdb, ddb)
		t, err := timeIt(func() error {
			cmd := exec.Command("bash", "-o", "pipefail", "-c", fmt.Sprintf("mariadb-binlog --no-defaults %s | mariadb --no-defaults -h127.0.0.1 -P%d -uroot",
				strings.Join(use, " "), replay.Port))
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if got := count(b, rdb, srcT); got != gen.Rows {
			b.Fatalf("replay has %d rows, want %d", got, gen.Rows)
		}
		fmt.Printf("    round %d: %-40s %6.1f s\n", round+1, "mariadb-binlog | mariadb", t.Seconds())
		if replayTook == 0 || t < replayTook {
			replayTook = t
		}

		// csmh-sync in each mode, from a fresh target and checkpoint.
		for _, m := range modes {
			mustExec(b, ddb, "TRUNCATE TABLE "+dstT)
			mustExec(b, ddb, "DROP TABLE IF EXISTS edxapp_csmh.csmh_sync_state, edxapp_csmh.csmh_sync_lanes")
			quiesce(b, sdb, rdb, ddb)
			var r *replication.Replicator
			var stop func()
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			t, err = timeIt(func() error {
				r, stop = replicator(b, src, dst, m.from)
				wctx, c := context.WithTimeout(ctx, 30*time.Minute)
				defer c()
				return r.WaitFor(wctx, m.until)
			})
			stop()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			if err != nil {
				b.Fatal(err)
			}
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			fmt.Printf("    round %d: %-40s %6.1f s (cpu %s, %.0f%% of one core)\n", round+1, m.name, t.Seconds(),
				cpu.Round(time.Millisecond), 100*cpu.Seconds()/t.Seconds())
			if got := count(b, ddb, dstT); got != gen.Rows {
				b.Fatalf("%s applied %d rows, want %d", m.name, got, gen.Rows)
			}
			if took[m.name] == 0 || t < took[m.name] {
				took[m.name] = t
			}
		}
	}
	rate := func(d time.Duration) float64 { return float64(gen.Rows) / d.Seconds() }
	fmt.Printf("\nApply of a binlog of %d row changes (%d transactions of 100 rows), targets without binlog, best of %d runs per path\n",
		gen.Rows, gen.Rows/100, repeats)
	fmt.Printf("%-40s %10s %8s\n", "path", "rows/s", "ratio")
	fmt.Printf("%-40s %10.0f %8.2f\n", "mariadb-binlog | mariadb (baseline)", rate(replayTook), 1.0)
	for _, m := range modes {
		fmt.Printf("%-40s %10.0f %8.2f\n", m.name, rate(took[m.name]), replayTook.Seconds()/took[m.name].Seconds())
	}
	byGTID, byFile := took[modes[0].name], took[modes[1].name]
	fmt.Printf("file/position apply rate / GTID apply rate = %.2f (target: within 10%%)\n", byGTID.Seconds()/byFile.Seconds())
	b.ReportMetric(rate(byGTID), "apply-rows/s")
	b.ReportMetric(replayTook.Seconds()/byGTID.Seconds(), "apply×replay")
	b.ReportMetric(byGTID.Seconds()/byFile.Seconds(), "file×gtid")
}

// filePos is the source's current binlog file and offset, as a file-mode position.
func filePos(b *testing.B, db *sql.DB) *gtid.Set {
	b.Helper()
	file, off, err := dbconn.CurrentBinlogPos(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	g, err := gtid.Parse("mariadb", gtid.FilePos{File: file, Pos: off}.String())
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkReplicationLag measures how long a row inserted on the source takes to appear on the target while a
// load generator writes 2,000 single-row transactions per second from 16 connections: following GTIDs and
// following binlog file and offset (--position file), in interleaved rounds of the same load, each from a fresh
// checkpoint at the source's current position.
func BenchmarkReplicationLag(b *testing.B) {
	src := start(b, harness.Options{})
	dst := start(b, harness.Options{})
	ctx, cancel := ctxT(20 * time.Minute)
	defer cancel()
	if err := src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		b.Fatal(err)
	}
	if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true}); err != nil {
		b.Fatal(err)
	}
	sdb, _ := src.Open("")
	ddb, _ := dst.Open("")
	defer sdb.Close()
	defer ddb.Close()
	repeats := max(envInt("CSMH_BENCH_REPEAT"), 0)
	if repeats == 0 {
		repeats = 2
	}
	const gtidMode, fileMode = "GTID", "file/position"
	lags := map[string][]time.Duration{}
	rates := map[string][]float64{}
	for round := range repeats {
		for _, mode := range []string{gtidMode, fileMode} {
			mustExec(b, ddb, "DROP TABLE IF EXISTS edxapp_csmh.csmh_sync_state, edxapp_csmh.csmh_sync_lanes")
			quiesce(b, sdb, ddb)
			from := executed(b, sdb).String()
			if mode == fileMode {
				from = filePos(b, sdb).String()
			}
			l, rate := lagRound(ctx, b, src, dst, sdb, ddb, from)
			fmt.Printf("    round %d: %-14s %6.0f rows/s, %d samples: p50 %s, p99 %s, max %s\n", round+1, mode, rate, len(l),
				pct(l, 0.5).Round(time.Millisecond), pct(l, 0.99).Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
			lags[mode] = append(lags[mode], l...)
			rates[mode] = append(rates[mode], rate)
		}
	}
	fmt.Printf("\nSteady lag at ~2,000 rows/s (target) from 16 connections, %d rounds of 20 s per mode, all samples:\n", repeats)
	for _, mode := range []string{gtidMode, fileMode} {
		l := lags[mode]
		slices.Sort(l)
		fmt.Printf("  %-14s %d samples: p50 %s, p99 %s, max %s; p99 / 1 s target = %.3f\n", mode, len(l),
			pct(l, 0.5).Round(time.Millisecond), pct(l, 0.99).Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond), pct(l, 0.99).Seconds())
	}
	g, f := lags[gtidMode], lags[fileMode]
	fmt.Printf("file/position p99 / GTID p99 = %.2f (target: within 10%%)\n", pct(f, 0.99).Seconds()/pct(g, 0.99).Seconds())
	b.ReportMetric(pct(g, 0.5).Seconds()*1000, "p50-ms")
	b.ReportMetric(pct(g, 0.99).Seconds()*1000, "p99-ms")
	b.ReportMetric(pct(f, 0.99).Seconds()*1000, "file-p99-ms")
	b.ReportMetric(rates[gtidMode][0], "load-rows/s")
}

// lagRound streams from pos while the load runs for 20 s and returns each inserted row's time to reach the
// target, sorted, and the load's insert rate.
func lagRound(ctx context.Context, b *testing.B, src, dst *harness.Server, sdb, ddb *sql.DB, pos string) ([]time.Duration, float64) {
	b.Helper()
	_, stop := replicator(b, src, dst, pos)
	defer stop()
	var mu sync.Mutex
	pending := map[int64]time.Time{}
	var lags []time.Duration
	load, err := harness.NewLoadGen(sdb, harness.LoadOptions{Table: srcT, RowsPerSecond: 2000, Conns: 16, InsertWeight: 1,
		OnInsert: func(id int64, at time.Time) { mu.Lock(); pending[id] = at; mu.Unlock() }})
	if err != nil {
		b.Fatal(err)
	}
	duration := 20 * time.Second
	lctx, stopLoad := context.WithTimeout(ctx, duration)
	defer stopLoad()
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(lctx) }()
	// Poll the target's max id; a row counts as arrived when the applied max id reaches it (the applier commits
	// in source commit order, so this is at most a few milliseconds early).
	deadline := time.Now().Add(duration + 30*time.Second)
	for time.Now().Before(deadline) {
		var maxID sql.NullInt64
		if err := ddb.QueryRow("SELECT MAX(id) FROM " + dstT).Scan(&maxID); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		mu.Lock()
		for id, at := range pending {
			if maxID.Valid && id <= maxID.Int64 {
				lags = append(lags, now.Sub(at))
				delete(pending, id)
			}
		}
		left := len(pending)
		mu.Unlock()
		if lctx.Err() != nil && left == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond) // sampling interval of the measurement, not synchronisation
	}
	<-loadDone
	st := load.Stats()
	if len(lags) == 0 || st.Errors > 0 {
		b.Fatalf("no lag samples or load errors: %+v %v", st, load.LastError())
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	return lags, float64(st.Inserts) / duration.Seconds()
}

// batchRows reads CSMH_BENCH_BATCH_ROWS for tuning experiments (0 = the default).
func batchRows() int {
	n := 0
	fmt.Sscan(os.Getenv("CSMH_BENCH_BATCH_ROWS"), &n)
	return n
}

func envInt(name string) int {
	n := 0
	fmt.Sscan(os.Getenv(name), &n)
	return n
}
