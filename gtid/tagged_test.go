package gtid

import (
	"strings"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// Tagged GTIDs (MySQL 8.3+), on the values of the MySQL 8.4 Reference Manual, "GTID Format and Storage"
// (https://dev.mysql.com/doc/refman/8.4/en/replication-gtids-concepts.html): the set it gives,
// "3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_1:1-3:15-21, 3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_2:8-52",
// is what a server prints in gtid_executed as
// "3e11fa47-71ca-11e1-9e33-c80aa9429562:domain_1:1-3:15-21:domain_2:8-52" (MySQL bug #116789 shows both); a
// source may hold untagged and tagged GTIDs of one uuid at once, printed untagged first.
func TestTaggedSets(t *testing.T) {
	const u = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	for _, c := range []struct{ in, out string }{
		{"3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_1:1-3:15-21, 3E11FA47-71CA-11E1-9E33-C80AA9429562:Domain_2:8-52",
			u + ":domain_1:1-3:15-21:domain_2:8-52"},
		{u + ":domain_1:1-3:15-21:domain_2:8-52", u + ":domain_1:1-3:15-21:domain_2:8-52"},
		{u + ":1-5:mytag:1-3", u + ":1-5:mytag:1-3"},
		{u + ":mytag:1-3," + u + ":1-5", u + ":1-5:mytag:1-3"},
		{u + ":mytag:1-3:4-5:6", u + ":mytag:1-6"},
		{"ed102faf-eb00-11eb-8f20-0c5415bfaa1d:tag1:117", "ed102faf-eb00-11eb-8f20-0c5415bfaa1d:tag1:117"}, // Aurora MySQL's example
		{"8a94f357-aab4-11df-86ab-c80aa9429562:1-42," + u + ":1-1000", u + ":1-1000,8a94f357-aab4-11df-86ab-c80aa9429562:1-42"},
	} {
		s, err := Parse("mysql", c.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.in, err)
		}
		if got := s.String(); got != c.out {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, c.out)
		}
		if again, err := Parse("mysql", s.String()); err != nil || again.String() != c.out {
			t.Errorf("%q does not read back: %v", c.out, err)
		}
	}
	for _, bad := range []string{u + ":mytag", u + ":mytag:othertag:1-3", u + ":0", u + ":5-3", u + ":1-5:9tag:1", "zz:1-5",
		u + ":" + strings.Repeat("t", 33) + ":1"} {
		if s, err := Parse("mysql", bad); err == nil {
			t.Errorf("Parse(%q) = %q, want an error", bad, s)
		}
	}
}

// An untagged set prints exactly as go-mysql printed it before this package read sets itself, so existing
// checkpoints compare and print unchanged.
func TestUntaggedSetsPrintAsBefore(t *testing.T) {
	for _, in := range []string{"", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
		"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-3:5-9:11,8a94f357-aab4-11df-86ab-c80aa9429562:1-42"} {
		old, err := gomysql.ParseMysqlGTIDSet(in)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse("mysql", in)
		if err != nil {
			t.Fatal(err)
		}
		if s.String() != old.String() || s.Tagged() {
			t.Errorf("%q: %q (tagged %v), go-mysql prints %q", in, s, s.Tagged(), old)
		}
		if g := s.GoMySQL(); g == nil || g.String() != old.String() {
			t.Errorf("%q: GoMySQL() = %v, want %q", in, g, old)
		}
	}
}

// Untagged and tagged GTIDs of one uuid are different transactions: one never contains the other, they
// count apart, and Add (the stream naming a tagged transaction uuid:tag:n) adds to the tagged one only.
func TestTaggedContainsBehindAdd(t *testing.T) {
	const u = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	for _, c := range []struct {
		have, want string
		contains   bool
		behind     int64
	}{
		{u + ":1-5:mytag:1-3", u + ":1-5:mytag:1-3", true, 0},
		{u + ":1-5", u + ":1-5:mytag:1-3", false, 3},
		{u + ":1-5:mytag:1-3", u + ":1-5", true, 0},
		{u + ":mytag:1-5", u + ":1-5", false, 5},
		{u + ":1-5:mytag:1-3", u + ":1-7:mytag:1-3:othertag:1-2", false, 4},
		{u + ":domain_1:1-3:15-21:domain_2:8-52", u + ":domain_1:1-3:15-21:domain_2:8-52", true, 0},
		{u + ":domain_1:1-3:domain_2:8-52", u + ":domain_1:1-3:15-21:domain_2:8-52", false, 7},
		{u + ":DOMAIN_1:1-3:15-21", u + ":domain_1:1-3:15-21", true, 0},
	} {
		have, err1 := Parse("mysql", c.have)
		want, err2 := Parse("mysql", c.want)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if got := have.Contains(want); got != c.contains {
			t.Errorf("%q contains %q = %v, want %v", c.have, c.want, got, c.contains)
		}
		if got := have.Behind(want); got != c.behind {
			t.Errorf("%q behind %q = %d, want %d", c.have, c.want, got, c.behind)
		}
	}
	s, _ := Parse("mysql", u+":1-5")
	for _, g := range []string{u + ":mytag:1", u + ":6", u + ":mytag:2"} {
		if err := s.Add(g); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.String(); got != u+":1-6:mytag:1-2" || !s.Tagged() || s.GoMySQL() != nil {
		t.Fatalf("after adding tagged and untagged GTIDs: %q (tagged %v, GoMySQL %v)", got, s.Tagged(), s.GoMySQL())
	}
}
