package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A file-position checkpoint belongs to the server it started on: pointed at another server (a failover to a
// replica, a restored backup) the run is refused before anything streams; on its own server, once the
// checkpoint's file is purged, it stops with the purged-binlog remediation.
func TestFilePositionResumeValidation(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 500, Seed: 41})
	r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args("--position", "file")...)...)
	if r.code != 0 {
		t.Fatalf("backfill --position file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var pos, server string
	if err := dst.QueryRow("SELECT gtid_set, source_server FROM edxapp_csmh.csmh_sync_state").Scan(&pos, &server); err != nil {
		t.Fatal(err)
	}
	if !gtid.IsFilePos(pos) || !strings.HasPrefix(server, "server_id=") {
		t.Fatalf("checkpoint %q of %q: want a file position and the server's id", pos, server)
	}

	// Another server, with the same schema and binlog file names.
	other := harness.StartT(t, harness.Options{})
	if err := other.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	r = csmh(t, time.Minute, nil, "run", "--source-dsn", other.SourceDSN(), "--target-dsn", p.dst.TargetDSN(), "--metrics-addr", "")
	if r.code != 2 || !strings.Contains(r.stderr, "file positions do not carry over between servers") || !strings.Contains(r.stderr, server) {
		t.Fatalf("run against another server: exit %d, want 2 naming the checkpoint's server %s:\n%s", r.code, server, r.stderr)
	}

	// The checkpoint's file purged on its own server.
	if _, err := src.Exec("INSERT INTO " + harness.SourceTable + " (created, student_module_id) VALUES (NOW(6), 8)"); err != nil {
		t.Fatal(err)
	}
	harness.PurgeBinlogs(t, src)
	r = csmh(t, time.Minute, nil, append([]string{"run"}, p.args()...)...)
	if r.code != 2 || !strings.Contains(r.stderr, "binlog purged") || !strings.Contains(r.stderr, "start over") {
		t.Fatalf("run after its file was purged: exit %d, want 2 with the purged-binlog remediation:\n%s", r.code, r.stderr)
	}
}

// A source whose binlog index is past .999999 streams across the rollover to .1000000 in file mode: the
// checkpoint moves on to the new file (as strings, "mysql-bin.1000000" sorts before "mysql-bin.999999"), and
// the target ends equal to the source.
func TestFilePositionAcrossBinlogRollover(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 2000, Seed: 43})
	if _, err := src.Exec("RESET MASTER TO 999999"); err != nil {
		t.Fatal(err)
	}
	startRun(t, p, "--position", "file")
	write := func(n int) {
		for i := range n {
			if _, err := src.Exec("INSERT INTO "+harness.SourceTable+" (created, student_module_id) VALUES (NOW(6), ?)", i); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := src.Exec("UPDATE " + harness.SourceTable + " SET grade = grade + 1 WHERE id % 7 = 0"); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Exec("DELETE FROM " + harness.SourceTable + " WHERE id % 11 = 0"); err != nil {
			t.Fatal(err)
		}
	}
	write(50)
	caughtUp(t, src, dst, time.Minute)
	var pos string
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pos, "file:mysql-bin.999999:") {
		t.Fatalf("checkpoint %s before the rollover, want it in mysql-bin.999999", pos)
	}
	if _, err := src.Exec("FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	write(50)
	caughtUp(t, src, dst, time.Minute)
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pos, "file:mysql-bin.1000000:") {
		t.Fatalf("checkpoint %s after the rollover, want it in mysql-bin.1000000", pos)
	}
	requireEqual(t, src, dst)
}

// In file mode an operator reads the same answers as in GTID mode, counted in binlog bytes: the daemon's
// /readyz turns ready and its transactions-behind gauge reads 0 once it has the source's file/position;
// cutover waits for that position and says GO; with the daemon stopped and the source written to, `status`
// gives both positions and the bytes between them, and cutover says NO-GO within its timeout. A DDL of the
// source table stops the stream naming the binlog position the DDL starts at — where the checkpoint then
// stands — and `run --accept-ddl <that position>` passes it once the target is adapted.
func TestFilePositionStatusCutoverAndDDL(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 5_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 47})
	addr := freeAddr(t)
	base := "http://" + addr
	d := startRun(t, p, "--position", "file", "--metrics-addr", addr)
	harness.Eventually(t, time.Minute, "backfill done", func() (bool, error) { return backfillDone(dst) })
	insert := func(n int, smid int) {
		t.Helper()
		for range n {
			if _, err := src.Exec("INSERT INTO "+harness.SourceTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), '{}', ?)", smid); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(20, 5)
	r := csmh(t, 2*time.Minute, nil, append([]string{"cutover", "--timeout", "60s", "--min-runway", "1000"}, p.args()...)...)
	if r.code != 0 || !hasLine(r.stdout, "ok", "caught up") || !hasLine(r.stdout, "ok", "the source's binlog position file:mysql-bin.") {
		t.Fatalf("cutover in file mode: exit %d, want GO with the source's binlog position caught up:\n%s%s", r.code, r.stdout, r.stderr)
	}
	harness.Eventually(t, 30*time.Second, "/readyz 200 and nothing behind", func() (bool, error) {
		code, _, err := get(base + "/readyz")
		if err != nil || code != http.StatusOK {
			return false, err
		}
		_, page, err := get(base + "/metrics")
		v, ok := metricValue(page, "csmh_sync_replication_transactions_behind")
		return ok && v == 0, err
	})
	requireEqual(t, src, dst)

	// The daemon stopped, the source written to: both positions and the bytes between them.
	stop := func(d *daemon) {
		t.Helper()
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-d.done; err != nil {
			t.Fatalf("run after SIGTERM: %v\n%s", err, tailStr(d.out.String(), 20))
		}
		d.done <- nil
	}
	stop(d)
	insert(5, 6)
	file, off, err := dbconn.CurrentBinlogPos(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	r = csmh(t, 30*time.Second, nil, append([]string{"status", "--json"}, p.args()...)...)
	var st struct {
		GTID               string `json:"gtid"`
		SourceExecuted     string `json:"source_executed"`
		TransactionsBehind int64  `json:"transactions_behind"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	cp, err := gtid.ParseFilePos(st.GTID)
	if err != nil || !gtid.IsFilePos(st.GTID) {
		t.Fatalf("status position %q: want the checkpoint's file position (%v)", st.GTID, err)
	}
	want := gtid.FilePos{File: file, Pos: off}
	if st.SourceExecuted != want.String() || cp.File != file || st.TransactionsBehind != int64(off-cp.Pos) || st.TransactionsBehind <= 0 {
		t.Fatalf("status --json: checkpoint %s, source %s, %d behind; want the source at %s and the %d bytes between them",
			st.GTID, st.SourceExecuted, st.TransactionsBehind, want, off-cp.Pos)
	}
	r = csmh(t, 30*time.Second, nil, append([]string{"status"}, p.args()...)...)
	if r.code != 0 || !hasLine(r.stdout, "behind:", "bytes of binlog") {
		t.Fatalf("status: exit %d, want the distance in bytes of binlog:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, time.Minute, nil, append([]string{"cutover", "--timeout", "2s", "--min-runway", "1000"}, p.args()...)...)
	if r.code != 1 || !hasLine(r.stdout, "NO-GO", "bytes of binlog behind") {
		t.Fatalf("cutover with the daemon stopped: exit %d, want 1 with a catch-up NO-GO line in bytes:\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Started again (--position auto resumes the checkpoint in its own mode), the daemon catches up. A DDL of
	// the source table then stops it, naming the position the DDL starts at, which --accept-ddl takes.
	d = startRun(t, p)
	caughtUp(t, src, dst, time.Minute)
	sqlExec(t, p.src, "ALTER TABLE "+harness.SourceTable+" ADD COLUMN extra int NULL")
	if _, err := src.Exec("INSERT INTO " + harness.SourceTable + " (created, state, student_module_id, extra) VALUES (UTC_TIMESTAMP(6), '{}', 7, 42)"); err != nil {
		t.Fatal(err)
	}
	var named string
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		m := regexp.MustCompile(`transaction (file:[^)]+)\)`).FindStringSubmatch(d.out.String())
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || m == nil {
			t.Fatalf("run exited with %v; want exit 2 with the DDL stop naming its binlog position:\n%q", err, d.out.String())
		}
		named = m[1]
	case <-time.After(time.Minute):
		t.Fatal("run did not stop at the ALTER TABLE")
	}
	var pos string
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	// The checkpoint also holds the binlog file's creation time ("@…"), which the name of a DDL leaves out.
	if at, err := gtid.ParseFilePos(pos); err != nil || gtid.FilePrefix+at.File+":"+strconv.FormatUint(at.Pos, 10) != named || at.Created == 0 {
		t.Fatalf("the DDL stop names %s, the checkpoint stands at %s (%v): want the DDL to start where the checkpoint stands, in a file of known creation time", named, pos, err)
	}
	sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" ADD COLUMN extra int NULL")
	d = startRun(t, p, "--accept-ddl", strings.TrimPrefix(named, gtid.FilePrefix))
	caughtUp(t, src, dst, time.Minute)
	var extra int
	if err := dst.QueryRow("SELECT extra FROM " + harness.TargetTable + " WHERE student_module_id = 7 AND extra IS NOT NULL").Scan(&extra); err != nil || extra != 42 {
		t.Fatalf("the row written after the DDL on the target: extra %d (%v), want 42", extra, err)
	}
	requireEqual(t, src, dst)
	stop(d)
}
