package bench

import (
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

const (
	sameName  = "csmh-sync backfill, same server"
	crossName = "csmh-sync backfill, cross server, INSERT"
	loadName  = "csmh-sync backfill, cross server, LOAD DATA"
)

// engineArgs are the flags of every csmh-sync copy in BenchmarkBackfill, before CSMH_BENCH_ARGS: the latency
// guard paces a copy by the commit latency it adds to the target, which on two cores shared with the servers
// it always adds, app or none; here there is no app to spare.
var engineArgs = []string{"--max-latency-rise=0"}

const (
	srcT = harness.SourceTable
	dstT = harness.TargetTable
	cols = "id, version, created, state, grade, max_grade, student_module_id"
)

// BenchmarkBackfill copies the same ≥1M generated rows six ways and prints each beside the ceiling (the best of
// a single-statement and a chunked same-server INSERT … SELECT) and the old 10,000-id loop without its sleeps.
// csmh-sync copies with the latency guard off (engineArgs): with no app to give way to, it measures the copy
// itself; what the guard costs and buys is measured where there is an app, in BenchmarkAppImpact.
func BenchmarkBackfill(b *testing.B) {
	n := rowsEnv()
	src := start(b, harness.Options{})
	// The target runs innodb_autoinc_lock_mode=2 (MySQL 8's default; MariaDB's is 1), under which parallel LOAD
	// DATA writers do not take turns on the AUTO-INC lock. It changes nothing for multi-row INSERTs of explicit ids.
	dst := start(b, harness.Options{ExtraArgs: []string{"--innodb-autoinc-lock-mode=2"}})
	ctx, cancel := ctxT(time.Hour)
	defer cancel()
	if err := src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{TargetAutoIncrement: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true, TargetAutoIncrement: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	sdb, _ := src.Open("")
	ddb, _ := dst.Open("")
	defer sdb.Close()
	defer ddb.Close()
	gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: n, Seed: 7})
	if err != nil {
		b.Fatal(err)
	}
	var dataBytes float64
	if err := sdb.QueryRow("SELECT SUM(IFNULL(LENGTH(state),0) + IFNULL(LENGTH(version),0) + 40) FROM " + srcT).Scan(&dataBytes); err != nil {
		b.Fatal(err)
	}
	reset := func(db *sql.DB) {
		mustExec(b, db, "TRUNCATE TABLE "+dstT)
		mustExec(b, db, "ALTER TABLE "+dstT+" AUTO_INCREMENT = 1099511627776") // app ids far above the copied range
		mustExec(b, db, "DROP TABLE IF EXISTS edxapp_csmh.csmh_sync_state, edxapp_csmh.csmh_sync_backfill")
	}
	chunked := func(step int64) func() error {
		return func() error { return copyInChunks(sdb, gen.MinID, gen.MaxID, step) }
	}
	type result struct {
		name string
		took time.Duration
		rss  float64
	}
	var res []result
	// Each path runs `repeats` times (CSMH_BENCH_REPEAT, default 2) and keeps its best time, in rounds (every
	// path once, then every path again), so that a noisy stretch of the shared machine hits all paths alike.
	repeats := max(envInt("CSMH_BENCH_REPEAT"), 0)
	if repeats == 0 {
		repeats = 2
	}
	type path struct {
		name string
		db   *sql.DB
		f    func() error
	}
	var paths []path
	// CSMH_BENCH_PATHS (comma-separated substrings) keeps only the matching paths besides the ceiling's two,
	// for tuning runs.
	keep := strings.Split(os.Getenv("CSMH_BENCH_PATHS"), ",")
	measure := func(name string, db *sql.DB, f func() error) {
		ok := len(paths) < 2 || keep[0] == ""
		for _, k := range keep {
			ok = ok || (k != "" && strings.Contains(name, k))
		}
		if ok {
			paths = append(paths, path{name, db, f})
		}
	}
	want := gen.Rows
	runPaths := func(paths []path) []result {
		res := make([]result, len(paths))
		// The baselines run first in every round; csmh-sync's paths follow in an order that turns by one each
		// round, so no build or path always runs straight after the baselines' copies.
		first := 0
		for first < len(paths) && !strings.HasPrefix(paths[first].name, "csmh-sync") {
			first++
		}
		for round := range repeats {
			order := make([]int, len(paths))
			for i := range order {
				order[i] = i
				if i >= first {
					order[i] = first + (i-first+round)%(len(paths)-first)
				}
			}
			for _, i := range order {
				p := paths[i]
				reset(p.db)
				quiesce(b, sdb, ddb)
				took, err := timeIt(p.f)
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				if got := count(b, p.db, dstT); got != want {
					b.Fatalf("%s copied %d rows, want %d", p.name, got, want)
				}
				fmt.Printf("    round %d: %-46s %6.1f s\n", round+1, p.name, took.Seconds())
				if res[i].took == 0 || took < res[i].took {
					res[i] = result{name: p.name, took: took}
				}
			}
		}
		return res
	}
	run := func() { res = runPaths(paths) }
	measure("single INSERT…SELECT (same server)", sdb, func() error {
		_, err := sdb.Exec("INSERT INTO " + dstT + " (" + cols + ") SELECT " + cols + " FROM " + srcT)
		return err
	})
	measure("chunked INSERT…SELECT, 50k ids (same server)", sdb, chunked(50_000))
	measure("old loop: 10k ids, no sleep (same server)", sdb, chunked(10_000))
	peakRSS := map[string]float64{} // by path name
	// CSMH_BENCH_BIN_B names other builds, comma-separated (say, the code before a change): each csmh-sync path
	// then runs with each of them too, in the same rounds, as "<path> [B]", "[C]" and so on, with engineArgs
	// but not the tuning flags; where CSMH_BENCH_ARGS_B is set (even empty), with its flags instead (a build may
	// predate a flag). Without engineArgs a build would copy with the latency guard on, beside builds with it off.
	type build struct {
		suffix, bin string
		same, cross []string // flags of the same-server and the cross-server copies
	}
	builds := []build{{"", binPath, append(slices.Clone(engineArgs), strings.Fields(os.Getenv("CSMH_BENCH_SAME_ARGS"))...), append(slices.Clone(engineArgs), extraArgs()...)}}
	argsB := slices.Clone(engineArgs)
	if a, ok := os.LookupEnv("CSMH_BENCH_ARGS_B"); ok {
		argsB = strings.Fields(a)
	}
	for i, bin := range strings.FieldsFunc(os.Getenv("CSMH_BENCH_BIN_B"), func(r rune) bool { return r == ',' }) {
		builds = append(builds, build{fmt.Sprintf(" [%c]", 'B'+i), bin, argsB, argsB})
	}
	for _, bu := range builds {
		copyTo := func(name, target string, flags ...string) func() error {
			return func() error {
				args := append([]string{"backfill", "--source-dsn", src.DSN(""), "--target-dsn", target, "--metrics-addr", "", "--log-level", "warn"}, flags...)
				_, rss := runBin(b, bu.bin, args...)
				peakRSS[name] = max(peakRSS[name], rss)
				return nil
			}
		}
		measure(sameName+bu.suffix, sdb, copyTo(sameName+bu.suffix, src.DSN(""), bu.same...))
		measure(crossName+bu.suffix, ddb, copyTo(crossName+bu.suffix, dst.DSN(""), append(slices.Clone(bu.cross), "--write-method", "insert")...))
		measure(loadName+bu.suffix, ddb, copyTo(loadName+bu.suffix, dst.DSN(""), append(slices.Clone(bu.cross), "--write-method", "load-data")...))
	}

	run()
	byName := map[string]*result{}
	for i := range res {
		byName[res[i].name] = &res[i]
	}
	for name, rss := range peakRSS {
		if r := byName[name]; r != nil {
			r.rss = rss
		}
	}

	ceiling := min(res[0].took, res[1].took)
	rate := func(d time.Duration) float64 { return float64(gen.Rows) / d.Seconds() }
	fmt.Printf("\nBackfill of %d rows (%.0f MB of row data), best of %d runs per path, ceiling = best same-server INSERT…SELECT = %.0f rows/s\n",
		gen.Rows, dataBytes/1e6, repeats, rate(ceiling))
	fmt.Printf("%-48s %10s %8s %9s %9s\n", "path", "rows/s", "MB/s", "×ceiling", "peak RSS")
	for _, r := range res {
		rss := ""
		if r.rss > 0 {
			rss = fmt.Sprintf("%.0f MiB", r.rss)
		}
		fmt.Printf("%-48s %10.0f %8.1f %9.2f %9s\n", r.name, rate(r.took), dataBytes/1e6/r.took.Seconds(), ceiling.Seconds()/r.took.Seconds(), rss)
	}
	if r := byName[sameName]; r != nil {
		b.ReportMetric(ceiling.Seconds()/r.took.Seconds(), "same-server×ceiling")
	}
	if r := byName[crossName]; r != nil {
		b.ReportMetric(ceiling.Seconds()/r.took.Seconds(), "cross-insert×ceiling")
	}
	if r := byName[loadName]; r != nil {
		b.ReportMetric(ceiling.Seconds()/r.took.Seconds(), "cross-load-data×ceiling")
		b.ReportMetric(peakRSS[loadName], "cross-peak-MiB")
	}

	// The sparse layout: the same rows plus three far outliers, so that equal id spans put every dense row in
	// the first segment. The baseline is the single-statement INSERT … SELECT (chunking by ids is meaningless
	// over two billion ids); each csmh-sync path's ratio to it is compared with its dense-layout ratio to the
	// same statement, measured above.
	for _, id := range []int64{1_500_000_000, 1_800_000_000, 2_100_000_000} {
		mustExec(b, sdb, "INSERT INTO "+srcT+" (id, created, state, grade, max_grade, student_module_id) VALUES (?, UTC_TIMESTAMP(6), '{}', 1, 1, ?)", id, id%1000)
	}
	want = gen.Rows + 3
	sparse := []path{paths[0]}
	for _, p := range paths {
		if strings.HasPrefix(p.name, "csmh-sync") {
			sparse = append(sparse, p)
		}
	}
	fmt.Printf("\nSparse layout: the %d rows plus 3 outliers at ids 1.5e9, 1.8e9 and 2.1e9\n", gen.Rows)
	sres := runPaths(sparse)
	single, sparseSingle := res[0].took, sres[0].took
	fmt.Printf("%-48s %10s %12s %12s %10s\n", "path", "rows/s", "dense×single", "sparse×single", "sparse/dense")
	worst := 1.0
	for i, r := range sres[1:] {
		d := byName[r.name]
		dense, sp := single.Seconds()/d.took.Seconds(), sparseSingle.Seconds()/r.took.Seconds()
		worst = min(worst, sp/dense)
		fmt.Printf("%-48s %10.0f %12.2f %12.2f %10.2f\n", sparse[i+1].name, float64(want)/r.took.Seconds(), dense, sp, sp/dense)
	}
	fmt.Printf("worst sparse/dense ratio %.2f (target: within 10%%, ≥ 0.90)\n", worst)
	b.ReportMetric(worst, "sparse/dense")
}

// copyInChunks copies the table on its own server in steps of step ids, one INSERT … SELECT each, as fast as
// the server goes: the old loop without its sleeps, and the copy without any tool.
func copyInChunks(db *sql.DB, minID, maxID, step int64) error {
	for lo := minID; lo <= maxID; lo += step {
		if _, err := db.Exec("INSERT INTO "+dstT+" ("+cols+") SELECT "+cols+" FROM "+srcT+" WHERE id BETWEEN ? AND ?", lo, lo+step-1); err != nil {
			return err
		}
	}
	return nil
}
