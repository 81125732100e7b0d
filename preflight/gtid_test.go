package preflight

import (
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// A MySQL source with gtid_mode=OFF (its default; SHOW GLOBAL VARIABLES shows gtid_mode OFF, or
// OFF_PERMISSIVE midway through turning GTIDs on) is followed by file and offset: an informational line, not a
// failure.
func TestGTIDFinding(t *testing.T) {
	for _, c := range []struct {
		si   dbconn.ServerInfo
		want string
	}{
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 4}, GTIDMode: "OFF"}, "gtid_mode is OFF: the stream follows binlog file and offset"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 5, Minor: 7}, GTIDMode: "OFF_PERMISSIVE"}, "gtid_mode is OFF_PERMISSIVE"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MySQL, Major: 8, Minor: 0}, GTIDMode: "ON"}, "GTIDs available"},
		{dbconn.ServerInfo{Version: dbconn.Version{Flavor: dbconn.MariaDB, Major: 10, Minor: 11}, GTIDMode: "ON"}, "GTIDs available"},
	} {
		if got := gtidFinding(c.si); !strings.Contains(got, c.want) || strings.Contains(got, "\n") {
			t.Errorf("%s gtid_mode=%s: %q, want %q", c.si.Version, c.si.GTIDMode, got, c.want)
		}
	}
}
