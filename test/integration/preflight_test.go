package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func TestPreflightPassesOnCorrectSetup(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	db, _ := p.src.Open("")
	defer db.Close()
	if _, err := harness.GenerateCSMH(context.Background(), db, harness.SourceTable, harness.GenOptions{Rows: 2000, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	r := csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"binlog on, ROW, FULL", "maps by name", "runway", "redo log limit 206 MiB"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// Each broken setup must exit 2 with a line that names the problem.
func TestPreflightNamesEachProblem(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		src    harness.Options
		schema harness.SchemaOptions
		mutate func(t *testing.T, p *pair)
		want   string
	}{
		{name: "binlog off", src: harness.Options{BinlogOff: true}, want: "binary logging is off"},
		{name: "statement format", src: harness.Options{BinlogFormat: "STATEMENT"}, want: "binlog_format is STATEMENT"},
		{name: "minimal image", src: harness.Options{BinlogRowImage: "MINIMAL"}, want: "binlog_row_image is MINIMAL"},
		{name: "missing source table", mutate: func(t *testing.T, p *pair) {
			sqlExec(t, p.src, "DROP TABLE "+harness.SourceTable)
		}, want: "edxapp.courseware_studentmodulehistory does not exist on the source"},
		{name: "missing target column", mutate: func(t *testing.T, p *pair) {
			sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" DROP COLUMN max_grade")
		}, want: "column max_grade: missing in"},
		{name: "lossy type", mutate: func(t *testing.T, p *pair) {
			sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" MODIFY created datetime NOT NULL")
		}, want: "drops fractional seconds"},
		{name: "lossy charset", mutate: func(t *testing.T, p *pair) {
			sqlExec(t, p.dst, "ALTER TABLE "+harness.TargetTable+" MODIFY state longtext CHARACTER SET utf8mb3")
		}, want: "charset utf8mb4 → utf8mb3"},
		{name: "target auto_increment below source", schema: harness.SchemaOptions{TargetAutoIncrement: 10}, mutate: func(t *testing.T, p *pair) {
			sqlExec(t, p.src, "ALTER TABLE "+harness.SourceTable+" AUTO_INCREMENT = 5000")
		}, want: "is not above the source's next id 5000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.schema.TargetAutoIncrement == 0 {
				c.schema.TargetAutoIncrement = 1_000_000
			}
			p := newPair(t, c.src, c.schema)
			if c.mutate != nil {
				c.mutate(t, p)
			}
			r := csmh(t, time.Minute, nil, append([]string{"preflight"}, p.args()...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\n%s%s", r.code, r.stdout, r.stderr)
			}
			if !hasLine(r.stdout, "FAIL", c.want) {
				t.Fatalf("no FAIL line containing %q:\n%s", c.want, r.stdout)
			}
		})
	}
	_ = ctx
}

func TestPreflightWrongPasswordIsNotEchoed(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	if err := p.src.CreateUser(context.Background(), "csmh", "right-secret", "SELECT ON *.*"); err != nil {
		t.Fatal(err)
	}
	// The password comes from a file and from the environment; neither may appear in any output.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("wrong-secret-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := csmh(t, time.Minute, nil, "preflight", "--source-dsn", p.src.UserDSN("csmh", "", ""), "--source-password-file", pwFile,
		"--target-dsn", p.dst.DSN(""), "--metrics-addr", "")
	if r.code != 2 || !hasLine(r.stdout, "FAIL", "access denied") {
		t.Fatalf("exit %d; want 2 with an access-denied line:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r2 := csmh(t, time.Minute, []string{"CSMH_SOURCE_DSN=" + p.src.UserDSN("csmh", "wrong-secret-2", "")}, "preflight",
		"--target-dsn", p.dst.DSN(""), "--metrics-addr", "")
	for _, out := range []string{r.stdout, r.stderr, r2.stdout, r2.stderr} {
		if strings.Contains(out, "wrong-secret") {
			t.Fatalf("password echoed:\n%s", out)
		}
	}
	if r2.code != 2 || !hasLine(r2.stdout, "FAIL", "access denied") {
		t.Fatalf("env DSN: exit %d:\n%s%s", r2.code, r2.stdout, r2.stderr)
	}
}

func TestPreflightUnreachableHostAnswersWithinTimeout(t *testing.T) {
	dst := harness.StartT(t, harness.Options{})
	// A listener that accepts connections and never says a word: the worst kind of unreachable server (a
	// half-dead host or a stuck proxy). A closed port refuses at once; both must answer within the timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	for _, c := range []struct{ name, dsn, want string }{
		{"refused", "root@tcp(127.0.0.1:1)/", "connection refused"},
		{"silent", "root@tcp(" + ln.Addr().String() + ")/", "no answer within the timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := csmh(t, 30*time.Second, nil, "preflight", "--source-dsn", c.dsn, "--target-dsn", dst.DSN(""),
				"--connect-timeout", "2s", "--metrics-addr", "")
			if r.code != 2 || !hasLine(r.stdout, "FAIL", c.want) {
				t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
			}
			if r.took > 10*time.Second {
				t.Fatalf("took %s; the connect timeout is 2s", r.took)
			}
		})
	}
}

func hasLine(out, prefix, substr string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func sqlExec(t *testing.T, s *harness.Server, q string) {
	t.Helper()
	if err := s.Exec(context.Background(), q); err != nil {
		t.Fatal(err)
	}
}
