package gtid

import (
	"errors"
	"testing"
)

// Real names: MySQL 8's default binlog.000003, 5.7's mysql-bin.000012, RDS's mysql-bin-changelog.000123,
// MariaDB's mysqld-bin.000002 (log_bin without a name); and the rollover past six digits.
func TestFilePosCompare(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"binlog.000003:157", "binlog.000003:157", 0},
		{"binlog.000003:157", "binlog.000003:1234", -1},
		{"binlog.000004:4", "binlog.000003:99999999", 1},
		{"binlog.999999:1073742000", "binlog.1000000:4", -1}, // as strings, "binlog.999999" > "binlog.1000000"
		{"binlog.1000001:4", "binlog.1000000:8000", 1},
		{"mysql-bin-changelog.000123:600", "mysql-bin-changelog.000124:4", -1},
		{"mysqld-bin.000002:342", "mysqld-bin.000002:341", 1},
		{"my.host.bin.000010:4", "my.host.bin.000009:4", 1}, // dots in the base name
	}
	for _, c := range cases {
		a, err := ParseFilePos(c.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseFilePos("file:" + c.b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := a.Compare(b)
		if err != nil || got != c.want {
			t.Errorf("%s vs %s: got %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
		if back, err := b.Compare(a); err != nil || back != -c.want {
			t.Errorf("%s vs %s: not antisymmetric (%d, %v)", c.b, c.a, back, err)
		}
	}
}

func TestFilePosCannotOrder(t *testing.T) {
	a, _ := ParseFilePos("binlog.000003:4")
	b, _ := ParseFilePos("mysql-bin.000003:4")
	if _, err := a.Compare(b); !errors.Is(err, ErrFileNames) {
		t.Fatalf("different base names: got %v, want ErrFileNames", err)
	}
	for _, s := range []string{"", "binlog.000003", "binlog.000003:", "binlog.000003:-1", "binlog.000003:12a",
		"binlog:4", "binlog.:4", "binlog.00x3:4", ":4", "file:"} {
		if p, err := ParseFilePos(s); err == nil {
			t.Errorf("ParseFilePos(%q) = %+v, want an error", s, p)
		}
	}
}

func TestFilePosRoundTrip(t *testing.T) {
	p, err := ParseFilePos(" file:binlog.1000000:4 ")
	if err != nil {
		t.Fatal(err)
	}
	if p.File != "binlog.1000000" || p.Pos != 4 || p.String() != "file:binlog.1000000:4" {
		t.Fatalf("got %+v / %s", p, p)
	}
	if !IsFilePos(p.String()) || IsFilePos("0-1-100") || IsFilePos("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5") {
		t.Fatal("IsFilePos tells the modes apart wrongly")
	}
}

// A Set in file mode: what the stream, the lanes and the resume checks do with positions.
func TestSetInFileMode(t *testing.T) {
	for _, flavor := range []string{"mysql", "mariadb"} {
		s, err := Parse(flavor, "file:binlog.999999:1000")
		if err != nil {
			t.Fatal(err)
		}
		if !s.IsFile() || s.IsEmpty() || s.GoMySQL() != nil {
			t.Fatalf("%s: IsFile %v IsEmpty %v", flavor, s.IsFile(), s.IsEmpty())
		}
		// Transactions end at growing offsets; a rotation moves to the next file's head.
		for _, end := range []string{"file:binlog.999999:1500", "file:binlog.999999:1200", "file:binlog.1000000:4", "file:binlog.1000000:350"} {
			if err := s.Add(end); err != nil {
				t.Fatal(err)
			}
		}
		if got := s.String(); got != "file:binlog.1000000:350" {
			t.Fatalf("%s: position %s, want file:binlog.1000000:350 (it never moves back)", flavor, got)
		}
		old, _ := Parse(flavor, "file:binlog.999999:1500")
		if !s.Contains(old) || old.Contains(s) || !s.Contains(s.Clone()) {
			t.Fatalf("%s: Contains is not 'at or after'", flavor)
		}
		exec, _ := Parse(flavor, "file:binlog.1000000:950")
		if got := s.Behind(exec); got != 600 {
			t.Fatalf("%s: Behind in one file = %d bytes, want 600", flavor, got)
		}
		if got := old.Behind(exec); got != 950 {
			t.Fatalf("%s: Behind across files = %d, want the newer file's 950 bytes (a lower bound)", flavor, got)
		}
		if got := exec.Behind(old); got != 0 {
			t.Fatalf("%s: ahead is not behind: %d", flavor, got)
		}
		// The modes never mix: a GTID set neither contains nor is contained by a file position.
		g, _ := Parse(flavor, map[string]string{"mysql": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5", "mariadb": "0-1-100"}[flavor])
		if g.Contains(s) || s.Contains(g) || s.Behind(g) != -1 {
			t.Fatalf("%s: a GTID set and a file position compared", flavor)
		}
		if err := g.Add("file:binlog.000001:4"); err == nil {
			t.Fatalf("%s: a file position was added to a GTID set", flavor)
		}
		if err := s.Add("0-1-101"); err == nil {
			t.Fatalf("%s: a GTID was added to a file position", flavor)
		}
		if err := s.Add("file:mysql-bin.000001:4"); err == nil {
			t.Fatalf("%s: a position of another binlog base name was added", flavor)
		}
	}
	if _, err := Parse("postgres", "file:binlog.000001:4"); err == nil {
		t.Fatal("unknown flavor accepted in file mode")
	}
}

func FuzzFilePosRoundTrip(f *testing.F) {
	f.Add("binlog.000003:157")
	f.Add("file:binlog.1000000:4")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseFilePos(s)
		if err != nil {
			return
		}
		q, err := ParseFilePos(p.String())
		if err != nil {
			t.Fatalf("re-parse %q: %v", p.String(), err)
		}
		if c, err := p.Compare(q); err != nil || c != 0 || q != p {
			t.Fatalf("round trip changed %q → %+v", s, q)
		}
	})
}
