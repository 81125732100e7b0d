package integration

import (
	"context"
	"strings"
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
	if _, err := src.Exec("FLUSH BINARY LOGS"); err != nil {
		t.Fatal(err)
	}
	newest, _, err := dbconn.CurrentBinlogPos(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	// MariaDB keeps a binlog until its crash-recovery checkpoint has moved past it: purge until it is gone.
	harness.Eventually(t, 30*time.Second, "binlogs purged", func() (bool, error) {
		if _, err := src.Exec("PURGE BINARY LOGS TO '" + newest + "'"); err != nil {
			return false, err
		}
		files, err := dbconn.BinaryLogs(ctx, src)
		return err == nil && len(files) == 1, err
	})
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
	d := startRun(t, p, "--position", "file")
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
	caughtUp(t, src, dst, time.Minute, d)
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
	caughtUp(t, src, dst, time.Minute, d)
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pos, "file:mysql-bin.1000000:") {
		t.Fatalf("checkpoint %s after the rollover, want it in mysql-bin.1000000", pos)
	}
	requireEqual(t, src, dst)
}
