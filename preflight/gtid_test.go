package preflight

import (
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// A MySQL source with gtid_mode=OFF (its default; SHOW GLOBAL VARIABLES shows gtid_mode OFF, or
// OFF_PERMISSIVE midway through turning GTIDs on) is followed by file and offset: an informational line, not a
// failure. A MariaDB source with gtid_strict_mode OFF (its default, https://mariadb.com/kb/en/gtid/#gtid_strict_mode)
// fails, naming the statement and the my.cnf line that turn it on.
func TestGTIDFinding(t *testing.T) {
	for _, c := range []struct {
		si       dbconn.ServerInfo
		position string
		lvl      Level
		want     string
	}{
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 4}, GTIDMode: "OFF"}, "", OK, "gtid_mode is OFF: the stream follows binlog file and offset"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 5, Minor: 7}, GTIDMode: "OFF_PERMISSIVE"}, "auto", OK, "gtid_mode is OFF_PERMISSIVE"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 0}, GTIDMode: "ON"}, "", OK, "GTIDs available"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11}, GTIDMode: "ON", GTIDStrictMode: true}, "", OK, "GTIDs available (gtid_strict_mode=ON)"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11}, GTIDMode: "ON"}, "", Fail, "SET GLOBAL gtid_strict_mode=1 on the source and add gtid_strict_mode=1 to the [mariadb] section of its my.cnf"},
		// --position file: what the source's GTIDs are does not matter, and the loose MariaDB GTIDs the failure
		// above sends the operator away from are no failure there.
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11}, GTIDMode: "ON"}, "file", OK, "--position file: the stream follows binlog file and offset"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 4}, GTIDMode: "ON"}, "file", OK, "--position file"},
		// --position gtid on a MySQL source without GTIDs: run would refuse it.
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 4}, GTIDMode: "OFF"}, "gtid", Fail, "--position gtid, and gtid_mode is OFF on the source"},
	} {
		lvl, got := gtidFinding(c.si, c.position)
		if lvl != c.lvl || !strings.Contains(got, c.want) || strings.Contains(got, "\n") {
			t.Errorf("%s gtid_mode=%s strict=%v: %s %q, want %s %q", c.si.Version, c.si.GTIDMode, c.si.GTIDStrictMode, lvl, got, c.lvl, c.want)
		}
	}
}

// A MySQL 8.4 source whose gtid_executed holds tagged GTIDs (the manual's "GTID Format and Storage",
// https://dev.mysql.com/doc/refman/8.4/en/replication-gtids-concepts.html, as the server prints it) fails,
// naming --position file; an untagged one passes.
func TestTaggedFinding(t *testing.T) {
	for _, c := range []struct {
		executed string
		fail     bool
	}{
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:domain_1:1-3:15-21:domain_2:8-52", true},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:mytag:1-3", true},
		{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n8a94f357-aab4-11df-86ab-c80aa9429562:1-42", false},
		{"", false},
	} {
		got := taggedFinding(c.executed)
		if (got != "") != c.fail || (c.fail && (!strings.Contains(got, "--position file") || strings.Contains(got, "\n"))) {
			t.Errorf("gtid_executed %q: %q; want a failure: %v, one line naming --position file", c.executed, got, c.fail)
		}
	}
}
