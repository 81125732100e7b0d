package gtid

import (
	"testing"
)

// Real values: MySQL 8.0 @@gtid_executed after a failover (two server UUIDs, a gap), RDS-style ranges,
// and MariaDB 10.11 @@gtid_binlog_pos with two domains.
func TestContainsAndBehind(t *testing.T) {
	cases := []struct {
		name, flavor, have, want string
		contains                 bool
		behind                   int64
	}{
		{"mysql equal", "mysql", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", true, 0},
		{"mysql behind", "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9", false, 4},
		{"mysql gap", "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-3:5-9", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9", false, 1},
		{"mysql failover", "mysql",
			"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-1000",
			"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-1000,\n8a94f357-aab4-11df-86ab-c80aa9429562:1-42", false, 42},
		{"mysql ahead", "mysql", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-20", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-9", true, 0},
		{"mysql empty exec", "mysql", "", "", true, 0},
		{"mariadb equal", "mariadb", "0-1-100", "0-1-100", true, 0},
		{"mariadb behind", "mariadb", "0-1-100", "0-1-130", false, 30},
		{"mariadb failover same domain", "mariadb", "0-1-100", "0-2-101", false, 1},
		{"mariadb other server ahead", "mariadb", "0-2-150", "0-1-101", true, 0},
		{"mariadb two domains", "mariadb", "0-1-100,1-7-5", "0-1-100,1-7-9", false, 4},
		{"mariadb missing domain", "mariadb", "0-1-100", "0-1-100,1-7-3", false, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			have, err := Parse(c.flavor, c.have)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Parse(c.flavor, c.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := have.Contains(want); got != c.contains {
				t.Errorf("Contains = %v, want %v", got, c.contains)
			}
			if got := have.Behind(want); got != c.behind {
				t.Errorf("Behind = %d, want %d", got, c.behind)
			}
		})
	}
}

func TestAddAdvances(t *testing.T) {
	s, _ := Empty("mariadb")
	for _, g := range []string{"0-1-1", "0-1-2", "1-1-7", "0-2-3"} {
		if err := s.Add(g); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.String(); got != "0-2-3,1-1-7" {
		t.Fatalf("got %q", got)
	}
	m, _ := Empty("mysql")
	for _, g := range []string{"3e11fa47-71ca-11e1-9e33-c80aa9429562:1", "3e11fa47-71ca-11e1-9e33-c80aa9429562:2", "3e11fa47-71ca-11e1-9e33-c80aa9429562:4"} {
		if err := m.Add(g); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.String(); got != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2:4" {
		t.Fatalf("got %q", got)
	}
	// The go-mysql form must round-trip: it is what the binlog dump command receives.
	if got := s.GoMySQL().String(); got != "0-2-3,1-1-7" {
		t.Fatalf("GoMySQL = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ flavor, s string }{
		{"mariadb", "0-1"}, {"mariadb", "a-b-c"}, {"mysql", "not-a-uuid:1-2"}, {"postgres", ""},
	} {
		if _, err := Parse(c.flavor, c.s); err == nil {
			t.Errorf("Parse(%q, %q): want error", c.flavor, c.s)
		}
	}
}

func FuzzMariaDBRoundTrip(f *testing.F) {
	f.Add("0-1-100,1-2-5")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		g, err := Parse("mariadb", s)
		if err != nil {
			return
		}
		again, err := Parse("mariadb", g.String())
		if err != nil {
			t.Fatalf("re-parse %q: %v", g.String(), err)
		}
		if !again.Contains(g) || !g.Contains(again) || g.Behind(again) != 0 {
			t.Fatalf("round trip changed %q → %q", s, again.String())
		}
	})
}
