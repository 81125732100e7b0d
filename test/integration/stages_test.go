package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// threadsRunning reads the source's Threads_running (the reading session counts itself).
func threadsRunning(db *sql.DB) (int, error) {
	var name string
	var n int
	err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Threads_running'").Scan(&name, &n)
	return n, err
}

// holdThreadsRunning keeps n sessions of db running a statement (SLEEP), so Threads_running stays above n
// until lift ends them. It returns once the server counts them all.
func holdThreadsRunning(t *testing.T, db *sql.DB, n int) (lift func()) {
	t.Helper()
	ctx := context.Background()
	ids := make([]int64, n)
	done := make(chan error, n)
	for i := range n {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&ids[i]); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer c.Close()
			var v int
			done <- c.QueryRowContext(ctx, "SELECT SLEEP(3600)").Scan(&v)
		}()
	}
	harness.Eventually(t, 30*time.Second, fmt.Sprintf("Threads_running above %d", n), func() (bool, error) {
		v, err := threadsRunning(db)
		return v > n, err
	})
	lifted := false
	lift = func() {
		if lifted {
			return
		}
		lifted = true
		for _, id := range ids {
			if _, err := db.Exec(fmt.Sprintf("KILL QUERY %d", id)); err != nil {
				t.Errorf("KILL QUERY %d: %v", id, err)
			}
		}
		for range n {
			if err := <-done; err != nil && !strings.Contains(err.Error(), "Error 1317") { // query execution was interrupted
				t.Errorf("sleeping session: %v", err)
			}
		}
	}
	t.Cleanup(lift)
	return lift
}

// stageStatus is what the tests read from `status --json`.
type stageStatus struct {
	Stage        string `json:"stage"`
	BackfillDone bool   `json:"backfill_done"`
	Stops        []struct {
		Stage, Reason, Message string
		At                     time.Time
	} `json:"stops"`
}

func readStatus(t *testing.T, p *pair) stageStatus {
	t.Helper()
	r := csmh(t, 30*time.Second, nil, append([]string{"status", "--json"}, p.args()...)...)
	var st stageStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	return st
}

func post(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// The backfill stops at critical load and the stream goes on: source changes made afterwards reach the
// target; /readyz refuses naming the stopped backfill and its reason while /healthz stays green (a liveness
// probe must not restart the sidecar); the metric, `status` and `status --json` say the same. POST /resume
// with the load still there starts the backfill again, which stops again before a chunk. Once the load is
// gone, POST /resume starts it again and it completes; the copy then equals the source, and SIGTERM exits 0.
//
// The race cannot decide the stop: 16 sessions sleep on the source before the daemon starts, so Threads_running
// is above 16 at the first throttle check, which comes before the first chunk; csmh-sync's own sessions on the
// source (binlog dump, one worker's reads, the status query, probes) stay well under 8 once they are gone.
func TestStageBackfillStopLeavesStreamRunning(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 61})
	lift := holdThreadsRunning(t, src, 16)
	addr := freeAddr(t)
	base := "http://" + addr
	d := startRun(t, p, "--metrics-addr", addr, "--critical-threads-running", "8", "--workers", "1")
	t.Cleanup(func() {
		if t.Failed() {
			_ = d.cmd.Process.Signal(syscall.SIGKILL)
			err := <-d.done
			d.done <- err
			t.Logf("daemon output:\n%s", tailStr(d.out.String(), 40))
		}
	})

	var body string
	harness.Eventually(t, time.Minute, "/readyz naming the stopped backfill", func() (bool, error) {
		code, b, err := get(base + "/readyz")
		body = b
		return code == http.StatusServiceUnavailable && strings.Contains(b, "backfill stopped (critical_load)"), err
	})
	if !strings.Contains(body, "--critical-threads-running 8") || !strings.Contains(body, "POST /resume") {
		t.Errorf("/readyz body %q: want the load limit and how to start the backfill again", body)
	}
	// The stop may come before the stream has connected; then the stream connects all the same.
	harness.Eventually(t, 30*time.Second, "/healthz 200 with the backfill stopped", func() (bool, error) {
		code, _, err := get(base + "/healthz")
		return code == http.StatusOK, err
	})
	_, page, err := get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{
		`csmh_sync_stage_stopped{reason="critical_load",stage="backfill"}`: 1,
		`csmh_sync_stage_stopped{reason="error",stage="backfill"}`:         0,
		"csmh_sync_backfill_rows_copied_total":                             0, // stopped before the first chunk
		"csmh_sync_backfill_done":                                          0,
	} {
		if v, ok := metricValue(page, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}

	// Changes made after the stop reach the target through the stream: new rows, and an update of a row the
	// backfill has not copied (the stream upserts its full image).
	for i := range 5 {
		if _, err := src.Exec(`INSERT INTO `+harness.SourceTable+` (id, version, created, state, grade, max_grade, student_module_id)
			VALUES (?, NULL, UTC_TIMESTAMP(6), '{"attempts": 2}', 1, 2, ?)`, gen.MaxID+1+int64(i), 700+i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Exec(`UPDATE ` + harness.SourceTable + ` SET grade = 7 WHERE id = 10`); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the changes after the stop on the target", func() (bool, error) {
		var n int
		err := dst.QueryRow(`SELECT COUNT(*) FROM `+harness.TargetTable+` WHERE id > ? OR (id = 10 AND grade = 7)`, gen.MaxID).Scan(&n)
		return n == 6, err
	})
	for _, r := range [][2]uint64{{10, 10}, {uint64(gen.MaxID) + 1, uint64(gen.MaxID) + 5}} {
		if diffs, n, err := harness.Diff(context.Background(), src, harness.SourceTable, dst, harness.TargetTable, r[0], r[1]); err != nil || n > 0 {
			t.Fatalf("ids %d-%d differ (%v): %v", r[0], r[1], err, diffs)
		}
	}
	var copied int
	if err := dst.QueryRow(`SELECT COUNT(*) FROM `+harness.TargetTable+` WHERE id <= ? AND id <> 10`, gen.MaxID).Scan(&copied); err != nil || copied != 0 {
		t.Fatalf("%d rows of the range on the target (%v); the stopped backfill copied none", copied, err)
	}

	// status, from the checkpoint alone.
	var st stageStatus
	harness.Eventually(t, 30*time.Second, "status --json naming the stopped backfill", func() (bool, error) {
		st = readStatus(t, p)
		return st.Stage == "backfill-stopped", nil
	})
	if len(st.Stops) != 1 || st.Stops[0].Stage != "backfill" || st.Stops[0].Reason != "critical_load" ||
		!strings.Contains(st.Stops[0].Message, "--critical-threads-running 8") || time.Since(st.Stops[0].At) > 5*time.Minute {
		t.Fatalf("status --json stops %+v; want the backfill's critical load stop, just now", st.Stops)
	}
	first := st.Stops[0].At
	r := csmh(t, 30*time.Second, nil, append([]string{"status"}, p.args()...)...)
	if r.code != 0 || !hasLine(r.stdout, "stage:", "backfill-stopped") || !hasLine(r.stdout, "stopped:", "backfill") ||
		!hasLine(r.stdout, "stopped:", "critical_load") || !hasLine(r.stdout, "stopped:", "POST /resume") {
		t.Fatalf("status: exit %d, want the stopped backfill, its reason and how to start it again:\n%s%s", r.code, r.stdout, r.stderr)
	}

	// cutover names the stop and how to continue; the stream runs, so it still waits for it to catch up.
	r = csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s"}, p.args()...)...)
	if r.code != 1 || !hasLineAll(r.stdout, "NO-GO", "backfill stopped (critical_load)", "--critical-threads-running 8", "to continue: POST /resume") ||
		!hasLine(r.stdout, "ok", "caught up") {
		t.Fatalf("cutover with the backfill stopped: exit %d, want 1 with a NO-GO line naming the stop and POST /resume, and the stream caught up:\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Started again with the load still there, it stops again, still before a chunk.
	if b := post(t, base+"/resume"); !strings.Contains(b, "started again") || !strings.Contains(b, "critical_load") {
		t.Fatalf("POST /resume of the stopped backfill answered %q", b)
	}
	harness.Eventually(t, time.Minute, "the backfill's second stop recorded", func() (bool, error) {
		st = readStatus(t, p)
		return st.Stage == "backfill-stopped" && len(st.Stops) == 1 && st.Stops[0].At.After(first), nil
	})
	harness.Eventually(t, 30*time.Second, "/readyz naming the second stop", func() (bool, error) {
		code, b, err := get(base + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(b, "backfill stopped (critical_load)"), err
	})
	if _, page, err = get(base + "/metrics"); err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(page, "csmh_sync_backfill_rows_copied_total"); v != 0 {
		t.Fatalf("%v rows copied under critical load", v)
	}

	// The cause lifted, /resume starts it again, and it completes.
	lift()
	harness.Eventually(t, 30*time.Second, "Threads_running back to csmh-sync's own", func() (bool, error) {
		n, err := threadsRunning(src)
		return n <= 4, err
	})
	if b := post(t, base+"/resume"); !strings.Contains(b, "started again") {
		t.Fatalf("POST /resume answered %q", b)
	}
	harness.Eventually(t, 2*time.Minute, "/readyz 200 after the backfill", func() (bool, error) {
		code, _, err := get(base + "/readyz")
		return code == http.StatusOK, err
	})
	if _, page, err = get(base + "/metrics"); err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{`csmh_sync_stage_stopped{reason="critical_load",stage="backfill"}`, `csmh_sync_stage_stopped{reason="error",stage="backfill"}`} {
		if v, ok := metricValue(page, series); !ok || v != 0 {
			t.Errorf("%s = %v (present %v) after the backfill completed, want 0", series, v, ok)
		}
	}
	if v, _ := metricValue(page, "csmh_sync_backfill_done"); v != 1 {
		t.Errorf("csmh_sync_backfill_done = %v, want 1", v)
	}
	if st = readStatus(t, p); st.Stage != "streaming" || !st.BackfillDone || len(st.Stops) != 0 {
		t.Fatalf("status --json after the backfill: %+v; want streaming, done, no stops", st)
	}
	caughtUp(t, src, dst, time.Minute)
	requireEqual(t, src, dst)

	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Fatalf("run exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not exit within 30s of SIGTERM")
	}
}

// The stream's stop ends the run, backfill included: a DDL on the source table in the middle of the copy
// makes run exit 2 with the DDL error; the backfill's chunk in flight committed whole or not at all (every
// segment holds exactly its counted rows below its next id and none above); status, read after the process
// is gone, names the stream's stop and its reason.
func TestStageStreamStopEndsRun(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	_, dst, _ := p.seed(t, harness.GenOptions{Rows: 4000, Seed: 62})
	// 4,000 rows at 200 rows/s: the copy lasts about 20 s, the DDL comes after its first chunk.
	d := startRun(t, p, "--max-rows-per-second", "200", "--chunk-time", "50ms", "--workers", "2")
	harness.Eventually(t, time.Minute, "the backfill's first chunk", func() (bool, error) {
		var n int
		err := dst.QueryRow("SELECT COALESCE(SUM(rows_copied), 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&n)
		return n > 0, err
	})
	sqlExec(t, p.src, "ALTER TABLE "+harness.SourceTable+" ADD COLUMN extra int NULL")
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(d.out.String(), "source table changed by DDL") {
			t.Fatalf("run exited with %v; want exit 2 with the DDL stop:\n%s", err, tailStr(d.out.String(), 30))
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not stop after ALTER TABLE")
	}
	if done, err := backfillDone(dst); err != nil || done {
		t.Fatalf("the backfill finished before the DDL stopped the run (%v): slow the copy down", err)
	}
	rows, err := dst.Query(`SELECT b.segment, b.next_id, b.rows_copied,
		(SELECT COUNT(*) FROM ` + harness.TargetTable + ` t WHERE t.id >= b.start_id AND t.id < b.next_id),
		(SELECT COUNT(*) FROM ` + harness.TargetTable + ` t WHERE t.id >= b.next_id AND t.id <= b.end_id)
		FROM edxapp_csmh.csmh_sync_backfill b ORDER BY b.segment`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seg, next, counted, below, above int64
		if err := rows.Scan(&seg, &next, &counted, &below, &above); err != nil {
			t.Fatal(err)
		}
		if below != counted || above != 0 {
			t.Errorf("segment %d at next id %d counts %d rows; the target holds %d below and %d at or above it", seg, next, counted, below, above)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st := readStatus(t, p)
	if st.Stage != "backfill" || len(st.Stops) != 1 || st.Stops[0].Stage != "stream" || st.Stops[0].Reason != "ddl" ||
		!strings.Contains(st.Stops[0].Message, "source table changed by DDL") || !strings.Contains(st.Stops[0].Message, "ADD COLUMN extra") {
		t.Fatalf("status --json after the DDL stop: %+v; want the stream's ddl stop naming the DDL, the backfill not stopped on its own", st)
	}
	r := csmh(t, 30*time.Second, nil, append([]string{"status"}, p.args()...)...)
	if r.code != 0 || !hasLineAll(r.stdout, "stopped:", "stream", "ddl", "--accept-ddl") {
		t.Fatalf("status: exit %d, want the stream's stop and how to continue:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// cutover says NO-GO naming the stop, at once: with the stream stopped nothing will catch up, so it does
	// not wait out its --timeout (the command's own bound here is far shorter).
	r = csmh(t, time.Minute, nil, append([]string{"cutover", "--timeout", "10m"}, p.args()...)...)
	if r.code != 1 || !hasLineAll(r.stdout, "NO-GO", "stream stopped (ddl)", "ADD COLUMN extra", "run --accept-ddl") ||
		!hasLine(r.stdout, "skip", "caught up") {
		t.Fatalf("cutover after the stream's stop: exit %d, want 1 with a NO-GO line naming the DDL stop and --accept-ddl:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// hasLineAll reports whether one line of out starts with prefix and contains every one of subs.
func hasLineAll(out, prefix string, subs ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			return true
		}
	}
	return false
}

// A daemon whose --replica-dsn cannot be reached at its start (the replica being rebuilt, a network fault)
// starts all the same: the stream applies the source's changes, while the backfill retries, holding no rows,
// until the replica answers (as it rides out a source or target outage). Before, `run` exited 2 at every
// start, and nothing applied the source's changes while its binlog retention ran out.
func TestRunStartsWithTheReplicaUnreachable(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 500, Seed: 63})
	addr := freeAddr(t)
	nobody := freeAddr(t) // nothing listens there: the connection is refused
	d := startRun(t, p, "--metrics-addr", addr, "--replica-dsn", "csmh_replica@tcp("+nobody+")/", "--connect-timeout", "2s")
	harness.Eventually(t, time.Minute, "the backfill retrying on the unreachable replica", func() (bool, error) {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("run exited: %v", err)
		default:
		}
		out := d.out.String()
		return strings.Contains(out, "the replica cannot be reached") && strings.Contains(out, "cannot read the --replica-dsn server's lag"), nil
	})
	code, body, err := get("http://" + addr + "/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "backfill not done") {
		t.Fatalf("/readyz %d %q (%v), want 503: backfill not done", code, body, err)
	}
	if _, err := src.Exec(`INSERT INTO `+harness.SourceTable+` (id, created, state, student_module_id) VALUES (?, UTC_TIMESTAMP(6), '{}', 9)`, gen.MaxID+1); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "a new source row streamed to the target", func() (bool, error) {
		var n int
		err := dst.QueryRow(`SELECT COUNT(*) FROM `+harness.TargetTable+` WHERE id = ?`, gen.MaxID+1).Scan(&n)
		return n == 1, err
	})
	var copied int
	if err := dst.QueryRow(`SELECT COUNT(*) FROM `+harness.TargetTable+` WHERE id <= ?`, gen.MaxID).Scan(&copied); err != nil || copied != 0 {
		t.Fatalf("%d rows of the range copied (%v) while the replica could not be read", copied, err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = <-d.done
	d.done <- err
	if err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
}
