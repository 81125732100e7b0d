package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// BenchmarkScale is `make bench-scale` (not part of `make bench`): a table that does not fit in memory. It
// generates CSMH_BENCH_SCALE_ROWS rows (default 10,000,000) on servers whose buffer pools hold at most a tenth
// of the table (CSMH_BENCH_SCALE_POOL_MB overrides the pool), and measures, in one run, each beside its
// baseline on the same servers:
//
//   - the backfill on one server and across servers, against the chunked same-server INSERT … SELECT;
//   - a full verify, against a single-server BIT_XOR(CRC32(row)) over the source;
//   - the stream's apply of a burst of new rows and updates of recent rows (what edX writes), against
//     `mariadb-binlog | mariadb` replaying the same binlog into a copy of the table on the source server;
//   - cutover through verify's ledger, against `cutover --full`;
//
// and the backfills' peak RSS. docs/benchmarks.md sets the figures beside the 1M-row ones of `make bench`.
func BenchmarkScale(b *testing.B) {
	rows := 10_000_000
	if s := os.Getenv("CSMH_BENCH_SCALE_ROWS"); s != "" {
		fmt.Sscan(s, &rows)
	}
	// A generated row takes about 800 bytes on disk (row data, the primary key and the index on
	// student_module_id); 700 keeps the pool under a tenth of the table.
	poolMB := max(rows*700/10/(1<<20), 8)
	if s := os.Getenv("CSMH_BENCH_SCALE_POOL_MB"); s != "" {
		fmt.Sscan(s, &poolMB)
	}
	srvArgs := []string{fmt.Sprintf("--innodb-buffer-pool-size=%dM", poolMB), "--innodb-buffer-pool-chunk-size=1M"}
	src := harness.StartT(b, harness.Options{ExtraArgs: srvArgs})
	dst := harness.StartT(b, harness.Options{ExtraArgs: append(srvArgs, "--innodb-autoinc-lock-mode=2")})
	ctx, cancel := ctxT(6 * time.Hour)
	defer cancel()
	if err := src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{TargetAutoIncrement: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true, TargetAutoIncrement: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	sdb, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: src.DSN("")}, dbconn.Options{MaxOpenConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer sdb.Close()
	ddb, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: dst.DSN("")}, dbconn.Options{MaxOpenConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer ddb.Close()
	// The replay baseline's copy of the table, on the source server (filled by the ceiling below).
	const replayT = "edxapp_replay.courseware_studentmodulehistory"
	mustExec(b, sdb, "CREATE DATABASE edxapp_replay")
	mustExec(b, sdb, "CREATE TABLE "+replayT+" LIKE "+srcT)

	t0 := time.Now()
	gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: rows, Seed: 13, BatchRows: 2000})
	if err != nil {
		b.Fatal(err)
	}
	var tableBytes int64
	mustExec(b, sdb, "ANALYZE TABLE "+srcT) // the sizes below are the statistics' (DATA_LENGTH + INDEX_LENGTH)
	if err := sdb.QueryRow(`SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = 'edxapp' AND TABLE_NAME = 'courseware_studentmodulehistory'`).Scan(&tableBytes); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nScale: %d rows generated in %s; the table takes %.0f MiB, the buffer pools %d MiB (1/%.0f)\n",
		gen.Rows, time.Since(t0).Round(time.Second), float64(tableBytes)/(1<<20), poolMB, float64(tableBytes)/float64(poolMB<<20))
	if int64(poolMB)<<20 > tableBytes/10 {
		b.Fatalf("the buffer pools (%d MiB) hold more than a tenth of the table (%.0f MiB): raise CSMH_BENCH_SCALE_ROWS or lower CSMH_BENCH_SCALE_POOL_MB",
			poolMB, float64(tableBytes)/(1<<20))
	}
	rate := func(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() }
	type line struct {
		what     string
		took     time.Duration
		n        int64
		baseline int // index of the line it is measured against; -1 = itself a baseline
		rss      float64
	}
	var lines []line
	add := func(what string, took time.Duration, n int64, baseline int, rss float64) int {
		fmt.Printf("    %-58s %8.1f s\n", what, took.Seconds())
		lines = append(lines, line{what, took, n, baseline, rss})
		return len(lines) - 1
	}
	timed := func(f func() error) time.Duration {
		took, err := timeIt(f)
		if err != nil {
			b.Fatal(err)
		}
		return took
	}
	srcArgs := []string{"--source-dsn", src.DSN(""), "--metrics-addr", "", "--log-level", "warn"}
	fillArgs := strings.Fields(os.Getenv("CSMH_BENCH_SCALE_ARGS")) // backfill flags, for tuning runs

	// Backfill.
	quiesce(b, sdb, ddb)
	ceiling := add("ceiling: chunked INSERT…SELECT, 50k ids, one server", timed(func() error {
		for lo := gen.MinID; lo <= gen.MaxID; lo += 50_000 {
			if _, err := sdb.Exec("INSERT INTO "+replayT+" ("+cols+") SELECT "+cols+" FROM "+srcT+" WHERE id BETWEEN ? AND ?", lo, lo+49_999); err != nil {
				return err
			}
		}
		return nil
	}), gen.Rows, -1, 0)
	quiesce(b, sdb, ddb)
	var rss float64
	took := timed(func() error {
		_, rss = runBinary(b, append(append([]string{"backfill", "--target-dsn", src.DSN("")}, srcArgs...), fillArgs...)...)
		return nil
	})
	add("csmh-sync backfill, same server", took, gen.Rows, ceiling, rss)
	quiesce(b, sdb, ddb)
	took = timed(func() error {
		_, rss = runBinary(b, append(append([]string{"backfill", "--target-dsn", dst.DSN("")}, srcArgs...), fillArgs...)...)
		return nil
	})
	add("csmh-sync backfill, cross server", took, gen.Rows, ceiling, rss)
	for _, db := range []*sql.DB{sdb, ddb} {
		if n := count(b, db, dstT); n != gen.Rows {
			b.Fatalf("the target holds %d rows, want %d", n, gen.Rows)
		}
	}

	// Full verify across servers.
	quiesce(b, sdb, ddb)
	crc := add("baseline: BIT_XOR(CRC32(row)), one server", timed(func() error {
		var x any
		return sdb.QueryRowContext(ctx, "SELECT BIT_XOR(CRC32(CONCAT_WS('#', id, version, created, state, grade, max_grade, student_module_id))) FROM "+srcT).Scan(&x)
	}), gen.Rows, -1, 0)
	quiesce(b, sdb, ddb)
	add("csmh-sync verify (checksum), cross server", timed(func() error {
		out := runCmd(b, append([]string{"verify", "--json", "--target-dsn", dst.DSN("")}, srcArgs...)...)
		if !strings.Contains(out, `"equal": true`) {
			return fmt.Errorf("verify: %s", out)
		}
		return nil
	}), gen.Rows, crc, 0)

	// Apply: the stream first catches up with everything so far (the other copies' writes, other tables'),
	// untimed, and stops; the source then writes a burst as edX does (new history rows, updates of recent
	// ones); the replay applies that binlog span to the copy of the table, and the stream, started again,
	// catches up with it.
	caughtUp := func(d *daemonProc) error {
		want := executed(b, sdb)
		deadline := time.Now().Add(2 * time.Hour)
		for time.Now().Before(deadline) {
			var pos string
			if err := ddb.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
				return err
			}
			if have, err := parseSet(pos); err == nil && have.Contains(want) {
				return nil
			}
			if d.exited() {
				return fmt.Errorf("run exited: %s", d.out.String())
			}
			time.Sleep(100 * time.Millisecond) // sampling interval of the measurement, not synchronisation
		}
		return fmt.Errorf("the stream did not catch up within 2 h: %s", d.out.String())
	}
	runArgs := append([]string{"run", "--target-dsn", dst.DSN("")}, srcArgs...)
	d := startDaemon(b, runArgs...)
	if err := caughtUp(d); err != nil {
		b.Fatal(err)
	}
	d.stop(b)
	from, fromPos := binlogPos(b, sdb)
	changes := scaleWrites(b, sdb, gen, max(rows/50, 10_000))
	to, toPos := binlogPos(b, sdb)
	quiesce(b, sdb, ddb)
	replay := add("baseline: mariadb-binlog | mariadb replay, one server", timed(func() error {
		files, err := filepath.Glob(filepath.Join(src.Dir, "data", "mysql-bin.[0-9]*"))
		if err != nil {
			return err
		}
		sort.Strings(files)
		var use []string
		for _, f := range files {
			if base := filepath.Base(f); base >= from && base <= to {
				use = append(use, f)
			}
		}
		// Not logged, and without the events' GTIDs, which this server has executed already (they are the
		// source's own).
		script := fmt.Sprintf("(echo 'SET SESSION sql_log_bin = 0;'; mariadb-binlog --no-defaults --rewrite-db='edxapp->edxapp_replay' --start-position=%d --stop-position=%d %s | sed -e '/gtid_seq_no=/d') | mariadb --no-defaults -h127.0.0.1 -P%d -uroot",
			fromPos, toPos, strings.Join(use, " "), src.Port)
		if out, err := exec.Command("bash", "-o", "pipefail", "-c", script).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}), changes, -1, 0)
	if a, c := count(b, sdb, replayT), count(b, sdb, srcT); a != c {
		b.Fatalf("the replay's copy holds %d rows, the source %d", a, c)
	}
	quiesce(b, sdb, ddb)
	d = startDaemon(b, append(runArgs, "--metrics-addr", freeAddrBench(b))...)
	defer d.stop(b)
	add("csmh-sync stream apply, cross server (from its start)", timed(func() error { return caughtUp(d) }), changes, replay, 0)
	if a, c := count(b, ddb, dstT), count(b, sdb, srcT); a != c {
		b.Fatalf("the target holds %d rows, the source %d", a, c)
	}

	// Cutover: through the ledger (what verify proved and the stream touched since), then a full pass (which
	// proves every chunk again, so it runs second).
	var checked string
	ledger := add("csmh-sync cutover (ledger)", timed(func() error {
		out := runCmd(b, append([]string{"cutover", "--json", "--timeout", "10m", "--target-dsn", dst.DSN("")}, srcArgs...)...)
		var rep struct {
			GO      bool            `json:"go"`
			Checked json.RawMessage `json:"checked"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.GO {
			return fmt.Errorf("cutover: %v %s", err, out)
		}
		checked = string(rep.Checked)
		return nil
	}), gen.Rows, -1, 0)
	full := add("baseline: cutover --full", timed(func() error {
		runCmd(b, append([]string{"cutover", "--full", "--timeout", "10m", "--target-dsn", dst.DSN("")}, srcArgs...)...)
		return nil
	}), gen.Rows, -1, 0)
	lines[ledger].baseline = full

	fmt.Printf("\nScale: %d rows, buffer pools %d MiB (1/%.0f of the table); each figure beside its baseline, same servers, same run\n",
		gen.Rows, poolMB, float64(tableBytes)/float64(poolMB<<20))
	fmt.Printf("%-58s %10s %10s %9s\n", "what", "rows/s", "ratio", "peak RSS")
	for _, l := range lines {
		ratio := "1.00"
		if l.baseline >= 0 {
			bl := lines[l.baseline]
			ratio = fmt.Sprintf("%.2f", rate(l.n, l.took)/rate(bl.n, bl.took))
		}
		r := ""
		if l.rss > 0 {
			r = fmt.Sprintf("%.0f MiB", l.rss)
		}
		fmt.Printf("%-58s %10.0f %10s %9s\n", l.what, rate(l.n, l.took), ratio, r)
	}
	fmt.Printf("cutover checked: %s\n", checked)
	for _, l := range lines {
		if l.baseline >= 0 {
			name := strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "").Replace(strings.TrimPrefix(l.what, "csmh-sync "))
			b.ReportMetric(rate(l.n, l.took)/rate(lines[l.baseline].n, lines[l.baseline].took), name+"×baseline")
		}
	}
}

// scaleWrites writes about n row changes on the source as edX does: half new history rows at the end of the id
// range, half updates of rows among the newest 1 % of ids, in transactions of 100 changes. It returns the rows
// changed.
func scaleWrites(b *testing.B, db *sql.DB, gen harness.GenResult, n int) int64 {
	b.Helper()
	r := rand.New(rand.NewPCG(17, 19))
	recent := max(gen.MaxID-(gen.MaxID-gen.MinID)/100, gen.MinID)
	var changed int64
	for changed < int64(n) {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		var vals []string
		for range 50 {
			vals = append(vals, fmt.Sprintf("(UTC_TIMESTAMP(6), '{\"attempts\": %d}', 1, 2, %d)", r.IntN(9), r.IntN(1_000_000)))
		}
		res, err := tx.Exec("INSERT INTO " + srcT + " (created, state, grade, max_grade, student_module_id) VALUES " + strings.Join(vals, ","))
		if err != nil {
			b.Fatal(err)
		}
		k, _ := res.RowsAffected()
		changed += k
		ids := make([]string, 50)
		for i := range ids {
			ids[i] = fmt.Sprint(recent + r.Int64N(gen.MaxID-recent+1))
		}
		if res, err = tx.Exec("UPDATE " + srcT + " SET grade = grade + 1 WHERE id IN (" + strings.Join(ids, ",") + ")"); err != nil {
			b.Fatal(err)
		}
		k, _ = res.RowsAffected()
		changed += k
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return changed
}

// daemonProc is a `csmh-sync run` in the background.
type daemonProc struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan struct{}
}

func startDaemon(b *testing.B, args ...string) *daemonProc {
	b.Helper()
	d := &daemonProc{cmd: exec.Command(binPath, args...), out: &strings.Builder{}, done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	return d
}

func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the exit (a second stop does nothing).
func (d *daemonProc) stop(b *testing.B) {
	b.Helper()
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		_ = d.cmd.Process.Kill()
		b.Fatalf("run did not stop after SIGTERM: %s", d.out.String())
	}
}

func freeAddrBench(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func parseSet(s string) (*gtid.Set, error) { return gtid.Parse("mariadb", s) }

// binlogPos is the source's current binlog file and offset.
func binlogPos(b *testing.B, db *sql.DB) (string, uint64) {
	b.Helper()
	file, pos, err := dbconn.CurrentBinlogPos(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	return file, pos
}

// runCmd runs csmh-sync and returns its standard output; exit 1 (a negative verdict) is returned too.
func runCmd(b *testing.B, args ...string) string {
	b.Helper()
	cmd := exec.Command(binPath, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		b.Fatalf("csmh-sync %s: %v\n%s%s", args[0], err, out.String(), errOut.String())
	}
	return out.String()
}
