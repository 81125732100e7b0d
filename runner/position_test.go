package runner

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/replication"
)

// Servers as Inspect reads them: a stock MySQL 8.4 (gtid_mode=OFF, its default), MySQL 8.0 with GTIDs, and
// MariaDB 10.11 (GTIDs always written; no server_uuid).
var (
	mysqlNoGTID = dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 4, Patch: 3}, ServerID: 1,
		ServerUUID: "5f1e2a9c-a1b2-11ef-9d4e-0242ac120002", LogBin: true, BinlogFormat: "ROW", BinlogRowImage: "FULL", GTIDMode: "OFF"}
	mysqlGTID = dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 0, Patch: 40}, ServerID: 1,
		ServerUUID: "3e11fa47-71ca-11e1-9e33-c80aa9429562", LogBin: true, BinlogFormat: "ROW", GTIDMode: "ON"}
	mariadb = dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11, Patch: 9}, ServerID: 1,
		LogBin: true, BinlogFormat: "ROW", BinlogRowImage: "FULL", GTIDMode: "ON", GTIDStrictMode: true}
	// mariadbLoose has gtid_strict_mode OFF, MariaDB's default (https://mariadb.com/kb/en/gtid/#gtid_strict_mode:
	// "Default Value: OFF"), as SHOW GLOBAL VARIABLES LIKE 'gtid_strict_mode' shows it on a stock server.
	mariadbLoose = dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11, Patch: 9}, ServerID: 1,
		LogBin: true, BinlogFormat: "ROW", BinlogRowImage: "FULL", GTIDMode: "ON", GTIDStrictMode: false}
)

func TestPositionFlagIsCheckedBeforeConnecting(t *testing.T) {
	for _, ok := range []string{"", "auto", "gtid", "file"} {
		if err := validPosition(ok); err != nil {
			t.Errorf("--position %q refused: %v", ok, err)
		}
	}
	err := validPosition("binlog")
	if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "use auto, gtid or file") {
		t.Fatalf("--position binlog: %v", err)
	}
	c := Common{SourceTableName: "edxapp.t", TargetTableName: "edxapp_csmh.t", ConnectTimeout: 1e9,
		Source: dbconn.Endpoint{DSN: "u@tcp(127.0.0.1:1)/"}, Target: dbconn.Endpoint{DSN: "u@tcp(127.0.0.1:1)/"}, Position: "gtids"}
	if err := c.Validate(); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--position") {
		t.Fatalf("Validate with --position gtids: %v", err)
	}
}

func TestFirstMode(t *testing.T) {
	cases := []struct {
		flag string
		si   dbconn.ServerInfo
		want string // "" = refused
	}{
		{"auto", mysqlNoGTID, PositionFile},
		{"", mysqlNoGTID, PositionFile},
		{"auto", mysqlGTID, PositionGTID},
		{"auto", mariadb, PositionGTID},
		{"file", mariadb, PositionFile},
		{"file", mysqlGTID, PositionFile},
		{"gtid", mysqlGTID, PositionGTID},
		{"gtid", mysqlNoGTID, ""},
		{"auto", mariadbLoose, ""},
		{"gtid", mariadbLoose, ""},
		{"file", mariadbLoose, PositionFile},
	}
	for _, c := range cases {
		got, err := firstMode(c.flag, c.si)
		if c.want == "" {
			want := "gtid_mode=OFF"
			if c.si.Version.Flavor == dbconn.MariaDB {
				want = "SET GLOBAL gtid_strict_mode=1"
			}
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%q on %s: got %q, %v; want a refusal naming %q", c.flag, c.si.Version, got, err, want)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q on %s (gtid_mode %s): got %q, %v; want %q", c.flag, c.si.Version, c.si.GTIDMode, got, err, c.want)
		}
	}
}

// A checkpoint written in one mode is refused in the other, in one line that names the flag to pass.
func TestCheckpointOfOtherModeIsRefused(t *testing.T) {
	file := &checkpoint.State{GTID: "file:mysqld-bin.000002:342", SourceServer: "server_id=1"}
	byGTID := &checkpoint.State{GTID: "0-1-1234", SourceServer: "server_id=1"}
	for _, c := range []struct {
		st   *checkpoint.State
		flag string
		want string
	}{
		{file, "gtid", "pass --position file (or auto)"},
		{byGTID, "file", "pass --position gtid (or auto)"},
	} {
		_, err := resumeMode(c.flag, c.st, mariadb, "edxapp_csmh")
		if !errors.Is(err, checkpoint.ErrMismatch) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("checkpoint %s with --position %s: %v", c.st.GTID, c.flag, err)
		}
	}
	// auto (and the matching flag) keeps the checkpoint's mode.
	for _, flag := range []string{"", "auto", "file"} {
		if m, err := resumeMode(flag, file, mariadb, "s"); err != nil || m != PositionFile {
			t.Fatalf("file checkpoint, --position %q: %q, %v", flag, m, err)
		}
	}
	if m, err := resumeMode("auto", byGTID, mariadb, "s"); err != nil || m != PositionGTID {
		t.Fatalf("GTID checkpoint, auto: %q, %v", m, err)
	}
	// A GTID checkpoint on a MariaDB source whose strict mode is off is refused with the fix; a file one resumes.
	if _, err := resumeMode("auto", byGTID, mariadbLoose, "s"); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "SET GLOBAL gtid_strict_mode=1") {
		t.Fatalf("GTID checkpoint on a gtid_strict_mode=OFF source: %v", err)
	}
	if m, err := resumeMode("auto", file, mariadbLoose, "s"); err != nil || m != PositionFile {
		t.Fatalf("file checkpoint on a gtid_strict_mode=OFF source: %q, %v", m, err)
	}
	// A GTID checkpoint on a MySQL source whose GTIDs were turned off cannot be resumed by GTID.
	mysqlCP := &checkpoint.State{GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-500"}
	if _, err := resumeMode("auto", mysqlCP, mysqlNoGTID, "s"); !errors.Is(err, checkpoint.ErrMismatch) {
		t.Fatalf("GTID checkpoint on a gtid_mode=OFF source: %v", err)
	}
}

func TestFileModeIdentity(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if got := fileIdentity(mysqlNoGTID); got != "server_id=1,server_uuid=5f1e2a9c-a1b2-11ef-9d4e-0242ac120002" {
		t.Fatalf("MySQL identity %q", got)
	}
	if got := fileIdentity(mariadb); got != "server_id=1" {
		t.Fatalf("MariaDB identity %q", got)
	}
	st := &checkpoint.State{GTID: "file:binlog.000007:1201", SourceServer: fileIdentity(mysqlNoGTID)}
	if err := checkIdentity(log, st, mysqlNoGTID, PositionFile); err != nil {
		t.Fatalf("same server refused: %v", err)
	}
	// A replica promoted after a failover: same server_id (one chart), another uuid.
	replica := mysqlNoGTID
	replica.ServerUUID = "8a94f357-aab4-11df-86ab-c80aa9429562"
	err := checkIdentity(log, st, replica, PositionFile)
	if !errors.Is(err, replication.ErrDiverged) || !errors.Is(err, ErrResume) || !strings.Contains(err.Error(), "file positions do not carry over") {
		t.Fatalf("another server in file mode: %v", err)
	}
	// GTID mode only logs it: GTIDs survive a failover.
	g := &checkpoint.State{GTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", SourceServer: mysqlGTID.ServerUUID}
	other := mysqlGTID
	other.ServerUUID = replica.ServerUUID
	if err := checkIdentity(log, g, other, PositionGTID); err != nil {
		t.Fatalf("GTID mode refused a failover: %v", err)
	}
}

// SHOW BINARY LOGS as a MySQL 8.4 source shows it, past the six-digit rollover.
func TestFileOnSource(t *testing.T) {
	files := []dbconn.BinlogFile{{Name: "binlog.999998", Size: 1073742010}, {Name: "binlog.999999", Size: 1073741950},
		{Name: "binlog.1000000", Size: 180}, {Name: "binlog.1000001", Size: 157}}
	pos := func(s string) gtid.FilePos {
		p, err := gtid.ParseFilePos(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, ok := range []string{"binlog.999999:1073741950", "binlog.1000000:180", "binlog.1000001:157", "binlog.999998:4"} {
		if err := fileOnSource(pos(ok), files); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if err := fileOnSource(pos("binlog.999997:500"), files); !errors.Is(err, replication.ErrPurged) || !strings.Contains(err.Error(), "start over") {
		t.Errorf("purged file: %v", err)
	}
	if err := fileOnSource(pos("binlog.1000000:181"), files); !errors.Is(err, replication.ErrDiverged) {
		t.Errorf("offset past the file's end: %v", err)
	}
	if err := fileOnSource(pos("binlog.1000002:4"), files); !errors.Is(err, replication.ErrDiverged) {
		t.Errorf("a file the source never wrote: %v", err)
	}
	if err := fileOnSource(pos("mysql-bin.000003:4"), files); !errors.Is(err, replication.ErrDiverged) {
		t.Errorf("another base name: %v", err)
	}
}

// --accept-ddl takes the DDL's name as the stream's stop gives it: a GTID of either flavor, or in file mode
// the binlog position the DDL's transaction starts at, with or without the "file:" prefix.
func TestAcceptDDLNames(t *testing.T) {
	for in, want := range map[string]string{
		"0-1-1234": "0-1-1234",
		"3E11FA47-71CA-11E1-9E33-C80AA9429562:23":  "3e11fa47-71ca-11e1-9e33-c80aa9429562:23",
		"file:binlog.000003:1234":                  "file:binlog.000003:1234",
		"mysql-bin.1000000:4":                      "file:mysql-bin.1000000:4",
		" file:/var/lib/mysql/binlog.000042:8071 ": "file:/var/lib/mysql/binlog.000042:8071",
		// As status and the checkpoint show positions, with the file's creation time: the stream's names have none.
		"file:binlog.000003:1234@1796683305": "file:binlog.000003:1234",
	} {
		if got, ok := parseDDLName(in); !ok || got != want {
			t.Errorf("--accept-ddl %q: %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"garbage", "0-1-2,0-1-3", "binlog.000003", "binlog:12", "file:binlog.000003:x",
		"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"} {
		if got, ok := parseDDLName(bad); ok {
			t.Errorf("--accept-ddl %q taken as %q", bad, got)
		}
	}
}

// MariaDB 11.4 and later write events inside a transaction with end_log_pos 0 (go-mysql issues #901, #1035,
// as @@version and @@version_comment report those servers); 10.11 and MySQL do not.
func TestZeroLogPosSources(t *testing.T) {
	for _, c := range []struct {
		version, comment string
		want             bool
	}{
		{"11.4.2-MariaDB-ubu2404-log", "mariadb.org binary distribution", true},
		{"11.4.12-MariaDB-log", "MariaDB Server", true},
		{"11.8.3-MariaDB-log", "MariaDB Server", true},
		{"11.3.2-MariaDB-log", "MariaDB Server", false},
		{"10.11.19-MariaDB-0+deb12u1-log", "Debian 12", false},
		{"8.4.3", "MySQL Community Server - GPL", false},
	} {
		v, err := dbconn.ParseVersion(c.version, c.comment)
		if err != nil {
			t.Fatal(err)
		}
		if got := zeroLogPos(dbconn.ServerInfo{Version: v}); got != c.want {
			t.Errorf("%s: zeroLogPos %v, want %v", c.version, got, c.want)
		}
	}
}
