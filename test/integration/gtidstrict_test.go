package integration

import (
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A MariaDB source with gtid_strict_mode OFF (MariaDB's default) fails preflight, naming SET GLOBAL and the
// my.cnf line, and passes it as --position file, the mode that failure offers; run refuses it before writing a
// checkpoint; file/position mode, which compares no GTIDs, copies from it; with strict mode turned on preflight
// passes the check.
func TestMariaDBWithoutGTIDStrictMode(t *testing.T) {
	p := newPair(t, harness.Options{ExtraArgs: []string{"--gtid-strict-mode=0"}}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 300, Seed: 72})
	var strict int
	if err := src.QueryRow("SELECT @@GLOBAL.gtid_strict_mode").Scan(&strict); err != nil || strict != 0 {
		t.Fatalf("source gtid_strict_mode %d (%v), want 0", strict, err)
	}
	const fix = "run SET GLOBAL gtid_strict_mode=1 on the source and add gtid_strict_mode=1 to the [mariadb] section of its my.cnf"
	r := csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if r.code != 2 || !hasLineAll(r.stdout, "FAIL", "gtid", "gtid_strict_mode is OFF on the source", fix, "--position file") {
		t.Fatalf("preflight: exit %d, want 2 with a gtid FAIL naming the fix:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The mode that failure offers passes preflight: checked as run will follow the source.
	r = csmh(t, time.Minute, nil, append([]string{"preflight", "--position", "file"}, p.args()...)...)
	if r.code != 0 || !hasLineAll(r.stdout, "ok", "gtid", "--position file: the stream follows binlog file and offset") || hasLine(r.stdout, "FAIL", "") {
		t.Fatalf("preflight --position file: exit %d, want 0 with the gtid check passed:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = csmh(t, time.Minute, nil, append([]string{"run"}, p.args()...)...)
	if r.code != 2 || !hasLineAll(r.stderr, "csmh-sync run: ", "gtid_strict_mode is OFF", fix) {
		t.Fatalf("run: exit %d, want 2 with the fix:\n%s", r.code, r.stderr)
	}
	var states int
	if err := dst.QueryRow("SELECT COUNT(*) FROM edxapp_csmh.csmh_sync_state").Scan(&states); err != nil || states != 0 {
		t.Fatalf("checkpoint rows after the refusal: %d (%v), want none", states, err)
	}
	r = csmh(t, time.Minute, nil, append([]string{"backfill", "--position", "file"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("backfill --position file: exit %d, want 0:\n%s", r.code, r.stderr)
	}
	requireEqual(t, src, dst)

	sqlExec(t, p.src, "SET GLOBAL gtid_strict_mode = 1")
	r = csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if !hasLine(r.stdout, "ok", "GTIDs available (gtid_strict_mode=ON)") || hasLine(r.stdout, "FAIL", "gtid_strict_mode") {
		t.Fatalf("preflight with strict mode on: want the gtid check passed:\n%s%s", r.stdout, r.stderr)
	}
}
