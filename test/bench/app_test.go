package bench

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// app plays the Open edX LMS beside a migration, open loop: every operation starts at its scheduled time
// whether or not the ones before it have finished, and its latency counts from that time, so a stall shows
// as the whole queue it causes, not as one slow sample.
//
//   - insert: a graded submission with ENABLE_CSMH_EXTENDED on, one autocommit INSERT into CSMHE (id from its
//     AUTO_INCREMENT);
//   - update: an UPDATE of one CSMH row (the app rewrites a history row of the same request);
//   - read: the courseware history view, the rows of one student_module_id from CSMH and then from CSMHE,
//     newest first.
type app struct {
	csmh, csmhe *sql.DB // the servers holding CSMH and CSMHE (the same one for a same-server layout)
	minID       int64
	maxID       int64
	rates       map[string]float64 // operations per second by name
}

// appOps are the operation names, in print order.
var appOps = []string{"insert", "update", "read"}

// appStats are one phase's latencies by operation.
type appStats struct {
	lat    map[string][]time.Duration
	slow   map[string][]appSample // each operation's slowest samples, slowest first
	errors map[string]int
	first  map[string]error
}

// appSample is one operation's latency and its scheduled start, from the start of the phase.
type appSample struct{ at, took time.Duration }

// keepSlow is how many of each operation's slowest samples a phase keeps, to tell a stall at one moment (the
// backfill's start, its end) from a steady queue.
const keepSlow = 5

func newApp(csmh, csmhe *sql.DB, minID, maxID int64) *app {
	return &app{csmh: csmh, csmhe: csmhe, minID: minID, maxID: maxID,
		rates: map[string]float64{"insert": 20, "update": 5, "read": 20}}
}

// run drives the load until ctx ends and returns what every operation measured.
func (a *app) run(ctx context.Context) appStats {
	st := appStats{lat: map[string][]time.Duration{}, slow: map[string][]appSample{}, errors: map[string]int{}, first: map[string]error{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for op, rate := range a.rates {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(t0.UnixNano()), uint64(len(op))))
			var inflight sync.WaitGroup
			defer inflight.Wait()
			for k := 0; ; k++ {
				at := t0.Add(time.Duration(float64(k) / rate * float64(time.Second)))
				if d := time.Until(at); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d): // the open loop's schedule, not a synchronisation
					}
				} else if ctx.Err() != nil {
					return
				}
				arg := r.Int64()
				inflight.Go(func() {
					err := a.one(context.WithoutCancel(ctx), op, arg)
					took := time.Since(at)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						st.errors[op]++
						if st.first[op] == nil {
							st.first[op] = err
						}
						return
					}
					st.lat[op] = append(st.lat[op], took)
					sl := append(st.slow[op], appSample{at.Sub(t0), took})
					slices.SortFunc(sl, func(x, y appSample) int { return int(y.took - x.took) })
					st.slow[op] = sl[:min(len(sl), keepSlow)]
				})
			}
		})
	}
	wg.Wait()
	return st
}

func (a *app) one(ctx context.Context, op string, arg int64) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r := rand.New(rand.NewPCG(uint64(arg), 1))
	switch op {
	case "insert":
		_, err := a.csmhe.ExecContext(ctx, "INSERT INTO "+dstT+" (version, created, state, grade, max_grade, student_module_id) VALUES (NULL, UTC_TIMESTAMP(6), ?, 1, 1, ?)",
			`{"attempts": 1, "done": true, "seed": 1}`, 1+r.Int64N(5_000_000))
		return err
	case "update":
		_, err := a.csmh.ExecContext(ctx, "UPDATE "+srcT+" SET grade = ?, state = CONCAT(IFNULL(state, ''), ' ') WHERE id = ?",
			r.Float64(), a.minID+r.Int64N(a.maxID-a.minID+1))
		return err
	case "read":
		sm := 1 + r.Int64N(5_000_000)
		for _, q := range []struct {
			db *sql.DB
			t  string
		}{{a.csmh, srcT}, {a.csmhe, dstT}} {
			rows, err := q.db.QueryContext(ctx, "SELECT id, version, created, state, grade, max_grade FROM "+q.t+" WHERE student_module_id = ? ORDER BY id DESC", sm)
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			if err := rows.Close(); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown operation %q", op)
}

// pct returns the p-th percentile (nearest rank) of d, which it sorts.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(p*float64(len(d))+0.5) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// warm opens the app's connections before a phase, so no sample pays for a connection set-up.
func warm(b interface{ Fatal(...any) }, dbs ...*sql.DB) {
	for _, db := range dbs {
		db.SetMaxOpenConns(64)
		db.SetMaxIdleConns(64)
		db.SetConnMaxIdleTime(0)
		var conns []*sql.Conn
		for range 16 {
			c, err := db.Conn(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
	}
}

// openApp opens a pool for the app on s, separate from the benchmark's own.
func openApp(b interface{ Fatal(...any) }, s *harness.Server) *sql.DB {
	db, err := s.Open("")
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkAppImpact measures what the backfill costs the live site: for the same-server and the cross-server
// path, at innodb_autoinc_lock_mode 1 (MariaDB's and MySQL 5.7's default) and 2 (MySQL 8's), the app's
// latencies without the backfill and then during it, in the same run, and the backfill's rate beside the
// ceiling (a same-server INSERT … SELECT of the whole table on the same servers, without the app).
func BenchmarkAppImpact(b *testing.B) {
	n := envInt("CSMH_BENCH_APP_ROWS")
	if n <= 0 {
		n = 400_000
	}
	baseline := 15 * time.Second
	if s := envInt("CSMH_BENCH_APP_BASELINE_S"); s > 0 {
		baseline = time.Duration(s) * time.Second
	}
	// Each path's baseline and copies run CSMH_BENCH_APP_ROUNDS times (3) in turn (baseline, every copy,
	// baseline, every copy, …), and each phase's samples are pooled over the rounds: a p99 over one copy of a few
	// seconds is its second or third slowest sample, and the machine's own stalls move it by more than the
	// budget. The controls run in the first round only.
	rounds := envInt("CSMH_BENCH_APP_ROUNDS")
	if rounds <= 0 {
		rounds = 3
	}
	type result struct {
		mode          int
		path          string
		variant       string // the label of the variant that ran
		base, during  appStats
		rate, ceiling float64
		rows          int64         // rows copied, over every round
		took          time.Duration // the copies' time, over every round
	}
	var results []result
	// Each path's backfill runs with CSMH_BENCH_APP_ARGS and then, where CSMH_BENCH_APP_COMPARE is set, again
	// with those flags instead, against the same baseline and ceiling: two settings side by side in one run.
	// Beside each path's copy, against the same baseline, the controls (CSMH_BENCH_APP_CONTROLS=off leaves them
	// out of tuning runs; "paced" keeps only the paced one): what the server's own chunked INSERT … SELECT costs
	// the app (on one server: the copy without any tool), flat out and, in every round, at the speed csmh-sync
	// made just before it (pacedCopy: the same copy with no tool, to tell the tool's cost from the speed's), and what busy CPUs and a busy disk cost it with no database work at all (shell loops on
	// every core, and on one core; a file appended and fsynced as fast as the disk takes it, and at the rates of
	// CSMH_BENCH_APP_DISK_RATES; each for as long as the first copy took, 5–30 s). They tell a cost of the copy's
	// work from a cost of sharing the machine: the floor under any copy that uses a core or the disk of it.
	type variant struct {
		label   string
		args    []string
		control string // "", "lowprio", "server", "paced", "cpu" (every core), "cpu1" (one core), "disk" (args: MiB/s)
	}
	variants := []variant{{"", strings.Fields(os.Getenv("CSMH_BENCH_APP_ARGS")), ""}}
	for c := range strings.SplitSeq(os.Getenv("CSMH_BENCH_APP_COMPARE"), ";") { // several settings: ';' between them
		if c = strings.TrimSpace(c); c != "" {
			variants = append(variants, variant{" (" + c + ")", strings.Fields(c), ""})
		}
	}
	// CSMH_BENCH_APP_LOWPRIO runs the copy again with its flags ("on": none), at the lowest CPU priority: the
	// server threads of its sessions and its own process at nice 19 (reniceSessions).
	if lp := os.Getenv("CSMH_BENCH_APP_LOWPRIO"); lp != "" {
		args := strings.Fields(lp)
		if lp == "on" {
			args = nil
		}
		variants = append(variants, variant{" [nice 19: " + strings.Join(args, " ") + "]", args, "lowprio"})
	}
	switch os.Getenv("CSMH_BENCH_APP_CONTROLS") {
	case "off":
	case "paced": // the like-for-like control alone, for tuning runs
		variants = append(variants, variant{" [server's copy at the tool's pace]", nil, "paced"})
	default:
		variants = append(variants, variant{" [server's chunked copy]", nil, "server"},
			variant{" [server's copy at the tool's pace]", nil, "paced"},
			variant{" [all cores busy, no database]", nil, "cpu"}, variant{" [one core busy, no database]", nil, "cpu1"},
			variant{" [disk busy, no database]", nil, "disk"})
		for _, r := range strings.Fields(os.Getenv("CSMH_BENCH_APP_DISK_RATES")) { // MiB/s, e.g. "25 50 100"
			variants = append(variants, variant{" [disk busy at " + r + " MiB/s, no database]", []string{r}, "disk"})
		}
	}
	only := os.Getenv("CSMH_BENCH_APP_ONLY") // e.g. "2/same": one lock mode and path, for tuning runs
	for _, mode := range []int{1, 2} {
		if only != "" && !strings.HasPrefix(only, fmt.Sprint(mode)) {
			continue
		}
		arg := fmt.Sprintf("--innodb-autoinc-lock-mode=%d", mode)
		sargs := []string{arg}
		if waitsOn() {
			sargs = append(sargs, waitsServerArgs...)
		}
		src := start(b, harness.Options{ExtraArgs: sargs})
		dst := start(b, harness.Options{ExtraArgs: sargs})
		ctx, cancel := ctxT(time.Hour)
		if err := src.LoadEdxSchema(ctx); err != nil {
			b.Fatal(err)
		}
		if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true}); err != nil {
			b.Fatal(err)
		}
		sdb, _ := src.Open("")
		ddb, _ := dst.Open("")
		addLowPriorityUser(b, sdb, ddb)
		gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: n, Seed: 11})
		if err != nil {
			b.Fatal(err)
		}
		cancel()
		// CSMHE as edX creates it: AUTO_INCREMENT = max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET.
		reset := func(db *sql.DB) {
			mustExec(b, db, "TRUNCATE TABLE "+dstT)
			mustExec(b, db, fmt.Sprintf("ALTER TABLE %s AUTO_INCREMENT = %d", dstT, gen.MaxID+10000))
			mustExec(b, db, "DROP TABLE IF EXISTS edxapp_csmh.csmh_sync_state, edxapp_csmh.csmh_sync_backfill, edxapp_csmh.csmh_sync_lanes, edxapp_csmh.csmh_sync_verify_ledger, edxapp_csmh.csmh_sync_verify_touched")
		}
		// The ceiling is measured beside each path's backfill, after the same quiet-server wait, so the two
		// share the machine's state.
		// The best of two runs: one run alone has measured anywhere from half to all of the other.
		ceilingNow := func() float64 {
			best := 0.0
			for range 2 {
				reset(sdb)
				quiesce(b, sdb, ddb)
				took, err := timeIt(func() error {
					_, err := sdb.Exec("INSERT INTO " + dstT + " (" + cols + ") SELECT " + cols + " FROM " + srcT)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				best = max(best, float64(gen.Rows)/took.Seconds())
			}
			return best
		}
		for _, p := range []struct {
			name   string
			server *harness.Server
			db     *sql.DB
		}{{"same server", src, sdb}, {"cross server", dst, ddb}} {
			if _, path, ok := strings.Cut(only, "/"); ok && path != strings.Fields(p.name)[0] {
				continue
			}
			appSrc, appDst := openApp(b, src), openApp(b, p.server)
			warm(b, appSrc, appDst)
			a := newApp(appSrc, appDst, gen.MinID, gen.MaxID)
			wdbs, servers := []*sql.DB{sdb}, []*harness.Server{src} // the path's servers, each once
			if p.server != src {
				wdbs, servers = append(wdbs, p.db), append(servers, p.server)
			}
			var base appStats // every round's baseline
			var ceiling float64
			acc := make([]*result, len(variants)) // each variant's results, over every round
			var copyTook time.Duration            // the first copy's wall time: how long the CPU controls run (5–30 s)
			for round := range rounds {
				reset(sdb)
				reset(p.db)
				quiesce(b, sdb, ddb)
				if waitsOn() {
					resetWaits(b, wdbs...)
				}
				bctx, stop := context.WithTimeout(context.Background(), baseline)
				roundBase := a.run(bctx)
				stop()
				base.merge(roundBase)
				var baseWaits waitProfile
				if waitsOn() {
					baseWaits = readWaits(b, "root", wdbs...)
				}
				if round == 0 {
					ceiling = ceilingNow()
				}
				var toolRate float64 // this round's rows/s of the first variant, the one the paced control follows
				for vi, v := range variants {
					if (v.control == "server" || v.control == "paced") && p.server != src {
						continue // only one server can copy a table to itself
					}
					if round > 0 && v.control != "" && v.control != "lowprio" && v.control != "paced" {
						continue // the controls are references: one round of each; the paced one is pooled as the copy is
					}
					reset(sdb)
					reset(p.db)
					quiesce(b, sdb, ddb)
					var startWaits waitProfile
					if waitsOn() {
						resetWaits(b, wdbs...)
						startWaits = readWaits(b, "root", wdbs...)
					}
					dctx, stopApp := context.WithCancel(context.Background())
					done := make(chan appStats)
					var tr *tracer
					if traceOn() {
						tr = startTrace(dctx, p.db, time.Now())
					}
					locks := watchLocks(dctx, p.db)
					go func() { done <- a.run(dctx) }()
					var took time.Duration
					w0 := serverWrites(b, servers...)
					switch v.control {
					case "":
						srcDSN, dstDSN := src.DSN(""), p.server.DSN("")
						if waitsOn() {
							srcDSN, dstDSN = src.UserDSN(lowPriorityUser, "", ""), p.server.UserDSN(lowPriorityUser, "", "")
						}
						args := append([]string{"backfill", "--source-dsn", srcDSN, "--target-dsn", dstDSN, "--metrics-addr", "",
							"--log-level", "warn"}, v.args...)
						took, _ = runBinary(b, args...)
						if copyTook == 0 {
							copyTook = min(max(took, 5*time.Second), 30*time.Second)
						}
					case "lowprio":
						rctx, stopRenice := context.WithCancel(context.Background())
						reniced := make(chan struct{})
						go func() {
							defer close(reniced)
							reniceSessions(rctx, wdbs...)
						}()
						args := append([]string{"backfill", "--source-dsn", src.UserDSN(lowPriorityUser, "", ""),
							"--target-dsn", p.server.UserDSN(lowPriorityUser, "", ""), "--metrics-addr", "", "--log-level", "warn"}, v.args...)
						took, _ = runNice(b, args...)
						stopRenice()
						<-reniced
					case "server":
						took = chunkedCopy(b, sdb, gen.MinID, gen.MaxID)
					case "paced":
						took = pacedCopy(b, sdb, gen.MinID, gen.MaxID, gen.Rows, ceiling, toolRate)
					case "cpu":
						took = burnCPUs(b, runtime.NumCPU(), copyTook)
					case "cpu1":
						took = burnCPUs(b, 1, copyTook)
					case "disk":
						var rate float64
						if len(v.args) > 0 {
							fmt.Sscan(v.args[0], &rate)
						}
						var wrote float64
						took, wrote = busyDisk(b, copyTook, rate)
						fmt.Printf("    lock mode %d, %s: wrote %.0f MiB/s\n", mode, p.name+v.label, wrote)
					}
					stopApp()
					during := <-done
					locks.print(fmt.Sprintf("lock mode %d, %s", mode, p.name+v.label))
					if v.control == "" || v.control == "server" || v.control == "paced" || v.control == "lowprio" {
						fmt.Printf("    lock mode %d, %s: the servers wrote %.0f MiB/s to storage\n", mode, p.name+v.label,
							float64(serverWrites(b, servers...)-w0)/(1<<20)/took.Seconds())
					}
					if waitsOn() {
						nops := func(st appStats) (n int) {
							for _, l := range st.lat {
								n += len(l)
							}
							return n
						}
						printWaits(fmt.Sprintf("lock mode %d, %s%s", mode, p.name, v.label), baseWaits, startWaits, readWaits(b, "root", wdbs...), nops(roundBase), nops(during))
						printSlowStatements(b, wdbs...)
					}
					if acc[vi] == nil {
						acc[vi] = &result{mode: mode, path: p.name + v.label, variant: v.label, ceiling: ceiling}
					}
					acc[vi].during.merge(during)
					if strings.HasPrefix(v.control, "cpu") || v.control == "disk" {
						fmt.Printf("    lock mode %d, %s: %s\n", mode, p.name+v.label, took.Round(time.Millisecond))
						continue
					}
					var copied int64
					if err := p.db.QueryRow(fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE id <= %d", dstT, gen.MaxID)).Scan(&copied); err != nil {
						b.Fatal(err)
					}
					if copied != gen.Rows {
						b.Fatalf("lock mode %d, %s: copied %d rows, want %d", mode, p.name, copied, gen.Rows)
					}
					r := acc[vi]
					r.rows += gen.Rows
					r.took += took
					r.rate = float64(r.rows) / r.took.Seconds()
					if tr != nil {
						for _, op := range appOps {
							for _, x := range during.slow[op][:min(2, len(during.slow[op]))] {
								fmt.Printf("      %s %s ms at %.2f s; the target server around it:\n", op, ms(x.took), x.at.Seconds())
								tr.around(x.at)
							}
						}
					}
					if vi == 0 {
						toolRate = float64(gen.Rows) / took.Seconds()
					}
					fmt.Printf("    lock mode %d, %s: %.0f rows/s (%.2f× the ceiling)\n", mode, r.path, float64(gen.Rows)/took.Seconds(), float64(gen.Rows)/took.Seconds()/ceiling)
				}
			}
			for _, r := range acc {
				if r != nil {
					r.base = base
					results = append(results, *r)
				}
			}
			printDeadlocks(src, p.server)
			appSrc.Close()
			appDst.Close()
		}
		sdb.Close()
		ddb.Close()
		src.Stop()
		dst.Stop()
	}

	fmt.Printf("\nApp impact of the backfill of %d rows, %d round(s) pooled; app: %v per second, open loop; latencies in ms (baseline → during the backfill);\n"+
		"p99 rise: its 90 %% interval (bootstrap), \"over\" where all of it is above 10 ms, \"within\" where all of it is at or below\n", n, rounds, newApp(nil, nil, 0, 0).rates)
	fmt.Printf("%-5s %-36s %-7s %8s %8s %8s  %8s %8s %8s %7s %9s %9s  %s\n", "mode", "path", "op", "p50", "p99", "max", "p50", "p99", "max", "errors", "rows/s", "×ceiling", "p99 rise [90 %]")
	worstP99, worstMax := time.Duration(0), time.Duration(0)
	for _, r := range results {
		for i, op := range appOps {
			bl, dl := r.base.lat[op], r.during.lat[op]
			bp50, bp99, bmax := pct(bl, 0.5), pct(bl, 0.99), pct(bl, 1)
			dp50, dp99, dmax := pct(dl, 0.5), pct(dl, 0.99), pct(dl, 1)
			if r.variant == "" { // the reported metrics are the copy's with its flags, not a comparison's or a control's
				worstP99, worstMax = max(worstP99, dp99-bp99), max(worstMax, dmax)
			}
			rate, ratio := "", ""
			if i == 0 && r.rate > 0 {
				rate, ratio = fmt.Sprintf("%.0f", r.rate), fmt.Sprintf("%.2f", r.rate/r.ceiling)
			}
			lo, hi := p99RiseInterval(bl, dl)
			fmt.Printf("%-5d %-36s %-7s %8s %8s %8s  %8s %8s %8s %7d %9s %9s  %s [%s, %s] %s\n", r.mode, r.path, op, ms(bp50), ms(bp99), ms(bmax),
				ms(dp50), ms(dp99), ms(dmax), r.base.errors[op]+r.during.errors[op], rate, ratio, ms(dp99-bp99), ms(lo), ms(hi), verdict(lo, hi))
			var slow []string
			for _, x := range r.during.slow[op] {
				slow = append(slow, fmt.Sprintf("%s at %.1f s", ms(x.took), x.at.Seconds()))
			}
			fmt.Printf("      slowest during the backfill (ms, from its start): %s\n", strings.Join(slow, ", "))
			if err := r.during.first[op]; err != nil {
				fmt.Printf("      first error during the backfill: %v\n", err)
			}
		}
	}
	// The tool against the server's own copy at the tool's pace, on the same servers in the same rounds: what
	// csmh-sync adds to what copying that fast costs the app (the interval of the difference of the two p99s).
	for _, pr := range results {
		if !strings.Contains(pr.variant, "the tool's pace") {
			continue
		}
		for _, tr := range results {
			if tr.variant != "" || tr.mode != pr.mode || !strings.HasPrefix(pr.path, tr.path) {
				continue
			}
			for _, op := range appOps {
				pl, tl := pr.during.lat[op], tr.during.lat[op]
				lo, hi := p99RiseInterval(pl, tl)
				fmt.Printf("lock mode %d, %s, %s: csmh-sync p99 %s ms at %.2f× the ceiling, the server's own copy at its pace %s ms at %.2f×: difference %s [%s, %s] ms\n",
					tr.mode, tr.path, op, ms(pct(tl, 0.99)), tr.rate/tr.ceiling, ms(pct(pl, 0.99)), pr.rate/pr.ceiling, ms(pct(tl, 0.99)-pct(pl, 0.99)), ms(lo), ms(hi))
			}
		}
	}
	for _, v := range variants {
		var p99, mx time.Duration
		ran := false
		verdicts := map[string]int{}
		for _, r := range results {
			if r.variant != v.label {
				continue
			}
			ran = true
			for _, op := range appOps {
				p99, mx = max(p99, pct(r.during.lat[op], 0.99)-pct(r.base.lat[op], 0.99)), max(mx, pct(r.during.lat[op], 1))
				verdicts[verdict(p99RiseInterval(r.base.lat[op], r.during.lat[op]))]++
			}
		}
		if !ran {
			continue
		}
		fmt.Printf("backfill%s: worst p99 increase %s ms (target ≤ 10), worst max during the backfill %s ms (target ≤ 100); p99 rises within 10 ms %d, over %d, undecided %d\n",
			v.label, ms(p99), ms(mx), verdicts["within"], verdicts["over"], verdicts["undecided"])
	}
	b.ReportMetric(float64(worstP99.Microseconds())/1000, "worst-p99-increase-ms")
	b.ReportMetric(float64(worstMax.Microseconds())/1000, "worst-max-ms")
}

// chunkedCopy is the server's own copy of the table in chunks of 50,000 ids (copyInChunks), timed: what the
// copy without any tool costs the app.
func chunkedCopy(b *testing.B, db *sql.DB, minID, maxID int64) time.Duration {
	b.Helper()
	took, err := timeIt(func() error { return copyInChunks(db, minID, maxID, 50_000) })
	if err != nil {
		b.Fatal(err)
	}
	return took
}

// pacedCopy is the server's own copy of the table at rate rows/s, the speed csmh-sync's copy made in the same
// round: one INSERT … SELECT at a time, of about 50 ms of the ceiling's rows each (the default --chunk-time),
// each started when the rows before it are due. It is the copy with no tool at the tool's speed, so a p99
// rise the two share is what copying that fast costs the app on these servers, and one csmh-sync adds to it
// is the tool's own. Below lock mode 2 each statement holds CSMHE's AUTO-INC lock, as a plain copy does.
func pacedCopy(b *testing.B, db *sql.DB, minID, maxID, rows int64, ceiling, rate float64) time.Duration {
	b.Helper()
	step := max(int64(ceiling*0.05*float64(maxID-minID+1)/float64(rows)), 1)
	took, err := timeIt(func() error {
		t0 := time.Now()
		var copied int64
		for lo := minID; lo <= maxID; lo += step {
			res, err := db.Exec("INSERT INTO "+dstT+" ("+cols+") SELECT "+cols+" FROM "+srcT+" WHERE id BETWEEN ? AND ?", lo, lo+step-1)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			copied += n
			if rate > 0 {
				time.Sleep(time.Until(t0.Add(time.Duration(float64(copied) / rate * float64(time.Second))))) // the pace, not a synchronisation
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return took
}

// burnCPUs keeps n cores busy for d with shell loops in processes of their own (a loop in this process would
// take the app's goroutines' turns in Go's scheduler, which the copy never does), without touching a database.
func burnCPUs(b *testing.B, n int, d time.Duration) time.Duration {
	b.Helper()
	t0 := time.Now()
	var procs []*exec.Cmd
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, c)
	}
	time.Sleep(d) // the control's duration, not a synchronisation
	for _, c := range procs {
		c.Process.Kill()
		c.Wait()
	}
	return time.Since(t0)
}

// busyDisk keeps the servers' disk busy for d the way the copy's servers keep it busy, without a database: a
// file in the directory the servers' data lives in, appended 1 MiB at a time and fsynced every 4 MiB, at
// mbps MiB/s (0: as fast as the disk takes it), started again every 256 MiB. It returns the time it ran and the MiB/s it wrote.
func busyDisk(b *testing.B, d time.Duration, mbps float64) (time.Duration, float64) {
	b.Helper()
	f, err := os.CreateTemp("", "csmh-bench-disk-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	t0 := time.Now()
	var written int64
	for time.Since(t0) < d {
		if written%(256<<20) == 0 && written > 0 {
			// Start the file again: appends to new blocks, as a binlog and a growing table get, whose fsyncs
			// commit the file system's journal, not overwrites of blocks already placed.
			if err := f.Truncate(0); err != nil {
				b.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		written += int64(len(buf))
		if written%(4<<20) == 0 {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		if mbps > 0 {
			// The writer's schedule (open loop, like the app's), not a synchronisation.
			time.Sleep(time.Until(t0.Add(time.Duration(float64(written) / (mbps * (1 << 20)) * float64(time.Second)))))
		}
	}
	took := time.Since(t0)
	return took, float64(written) / (1 << 20) / took.Seconds()
}

// serverWrites is the bytes the servers' processes have had written to storage (/proc/<pid>/io write_bytes):
// their redo, binlog, data pages and doublewrite buffer.
func serverWrites(b *testing.B, servers ...*harness.Server) int64 {
	b.Helper()
	var n int64
	for _, s := range servers {
		pid, err := os.ReadFile(s.PIDFile)
		if err != nil {
			b.Fatal(err)
		}
		io, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/io")
		if err != nil {
			b.Fatal(err)
		}
		for l := range strings.Lines(string(io)) {
			if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
				var x int64
				fmt.Sscan(v, &x)
				n += x
			}
		}
	}
	return n
}

// merge adds o's samples to st.
func (st *appStats) merge(o appStats) {
	if st.lat == nil {
		st.lat, st.slow, st.errors, st.first = map[string][]time.Duration{}, map[string][]appSample{}, map[string]int{}, map[string]error{}
	}
	for op, l := range o.lat {
		st.lat[op] = append(st.lat[op], l...)
	}
	for op, sl := range o.slow {
		all := append(slices.Clone(st.slow[op]), sl...)
		slices.SortFunc(all, func(x, y appSample) int { return int(y.took - x.took) })
		st.slow[op] = all[:min(len(all), keepSlow)]
	}
	for op, n := range o.errors {
		st.errors[op] += n
	}
	for op, err := range o.first {
		if st.first[op] == nil {
			st.first[op] = err
		}
	}
}

// p99RiseInterval is the 90 % interval of the p99's rise from base to during: the 5th and 95th percentiles of
// the rise over 2,000 bootstrap resamples of each (drawn with a fixed seed, so a run's figures can be printed
// again from its samples).
func p99RiseInterval(base, during []time.Duration) (lo, hi time.Duration) {
	if len(base) == 0 || len(during) == 0 {
		return 0, 0
	}
	const n = 2000
	r := rand.New(rand.NewPCG(1, 2))
	rises := make([]time.Duration, n)
	bs, ds := make([]time.Duration, len(base)), make([]time.Duration, len(during))
	for i := range rises {
		for j := range bs {
			bs[j] = base[r.IntN(len(base))]
		}
		for j := range ds {
			ds[j] = during[r.IntN(len(during))]
		}
		rises[i] = pct(ds, 0.99) - pct(bs, 0.99)
	}
	return pct(rises, 0.05), pct(rises, 0.95)
}

// verdict says what a p99 rise's interval says of the +10 ms budget.
func verdict(lo, hi time.Duration) string {
	switch {
	case lo > 10*time.Millisecond:
		return "over"
	case hi <= 10*time.Millisecond:
		return "within"
	}
	return "undecided"
}

// printDeadlocks prints what the servers' error logs say of deadlocks (innodb_print_all_deadlocks is on in the
// bench's servers): an app statement that fails on CSMHE's AUTO-INC lock names the transactions it met.
func printDeadlocks(servers ...*harness.Server) {
	seen := map[string]bool{}
	for _, s := range servers {
		if seen[s.ErrorLog] {
			continue
		}
		seen[s.ErrorLog] = true
		log, err := os.ReadFile(s.ErrorLog)
		if err != nil {
			continue
		}
		text := string(log)
		i := strings.Index(strings.ToLower(text), "deadlock")
		if i < 0 {
			continue
		}
		lines := strings.Split(text[max(strings.LastIndex(text[:i], "\n"), 0):], "\n")
		fmt.Printf("    %s: the error log from its first deadlock:\n", s.Addr())
		for _, l := range lines[:min(len(lines), 120)] {
			fmt.Printf("      %s\n", l)
		}
	}
}
