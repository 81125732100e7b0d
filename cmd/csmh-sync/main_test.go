package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// recorder is a TCP listener standing in for both servers: it records every connection, and closes it.
type recorder struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []string // remote addresses, in accept order
	more *sync.Cond
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	r.more = sync.NewCond(&r.mu)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.seen = append(r.seen, c.RemoteAddr().String())
			r.more.Broadcast()
			r.mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return r
}

// connections returns how many connections arrived before now. A dial of its own marks the end: the listener
// accepts in arrival order, so once it has seen that one it has seen every earlier one.
func (r *recorder) connections(t *testing.T) int {
	t.Helper()
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mark := c.LocalAddr().String()
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		for i, a := range r.seen {
			if a == mark {
				n := i
				r.seen = r.seen[:0]
				return n
			}
		}
		r.more.Wait()
	}
}

func clearCSMHEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "CSMH_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// Every bad flag of every command, from the command line or the environment, exits 2 with one line naming it,
// before any connection is opened: the servers' address is a listener that records connections.
func TestBadFlagsExitBeforeConnecting(t *testing.T) {
	clearCSMHEnv(t)
	rec := newRecorder(t)
	dsn := "csmh@tcp(" + rec.ln.Addr().String() + ")/"
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty, pw := file("empty", "\n"), file("pw", "secret\n")
	base := []string{"--source-dsn", dsn, "--target-dsn", dsn, "--metrics-addr", "", "--connect-timeout", "1s"}

	// The recorder sees what a command that got past Validate does: it connects (and fails, exit 2).
	for _, cmd := range []string{"preflight", "run", "backfill", "verify", "status", "cutover"} {
		var out, errb bytes.Buffer
		if code := cli(append([]string{cmd}, append(base, "--source-password-file", pw)...), &out, &errb); code != 2 {
			t.Fatalf("%s with good flags against the recorder: exit %d, want 2 (it cannot connect)\n%s", cmd, code, errb.String())
		}
		if n := rec.connections(t); n == 0 {
			t.Fatalf("%s with good flags: the recorder saw no connection, so it proves nothing\n%s", cmd, errb.String())
		}
	}

	requireRefused(t, rec, base, []badFlag{
		// Named in the issue: rejected only after connecting, or not at all.
		{args: []string{"run", "--chunk-bytes", "-1"}, want: "--chunk-bytes"},
		{args: []string{"run", "--chunk-time", "-1s"}, want: "--chunk-time"},
		{args: []string{"run", "--batch-delay", "-1s"}, want: "--batch-delay"},
		{args: []string{"run", "--metrics-addr", ":99999"}, want: "--metrics-addr"},
		{args: []string{"run", "--connect-timeout", "-1s"}, want: "--connect-timeout"},
		{args: []string{"run", "--batch-rows", "0"}, want: "--batch-rows"},
		{args: []string{"run", "--apply-lanes", "0"}, want: "--apply-lanes"},
		{args: []string{"run", "--accept-ddl", "garbage"}, want: "--accept-ddl"},
		// The rest of run's and backfill's flags.
		{args: []string{"run", "--apply-lanes", "17"}, want: "--apply-lanes"},
		{args: []string{"run", "--batch-delay", "0s"}, want: "--batch-delay"},
		{args: []string{"run", "--heartbeat", "0s"}, want: "--heartbeat"},
		{args: []string{"run", "--ready-max-lag", "-5s"}, want: "--ready-max-lag"},
		{args: []string{"run", "--server-id", "0"}, want: "--server-id"},
		{args: []string{"run", "--accept-ddl", "0-1-2,0-1-3"}, want: "--accept-ddl"},
		{args: []string{"run", "--accept-incident", "0-1-2"}, want: "--accept-incident"},
		{args: []string{"run", "--accept-incident", "binlog.000003"}, want: "--accept-incident"},
		{args: []string{"run", "--metrics-addr", rec.ln.Addr().String()}, want: "--metrics-addr"}, // busy
		{args: []string{"run", "--admin-token-file", empty}, want: "--admin-token-file"},
		{args: []string{"run", "--admin-token-file", filepath.Join(dir, "missing")}, want: "--admin-token-file"},
		{args: []string{"backfill", "--chunk-bytes", "1000"}, want: "--chunk-bytes"},
		{args: []string{"backfill", "--workers", "65"}, want: "--workers"},
		{args: []string{"backfill", "--start-id", "10", "--end-id", "5"}, want: "--start-id"},
		{args: []string{"backfill", "--write-method", "copy"}, want: "--write-method"},
		{args: []string{"backfill", "--same-server", "maybe"}, want: "--same-server"},
		{args: []string{"backfill", "--max-rows-per-second", "-1"}, want: "--max-rows-per-second"},
		{args: []string{"backfill", "--max-rows-per-second", "NaN"}, want: "--max-rows-per-second"},
		{args: []string{"backfill", "--max-redo-fill", "1"}, want: "--max-redo-fill 1: use a fraction below 1"},
		{args: []string{"run", "--max-redo-fill", "-0.5"}, want: "--max-redo-fill"},
		{args: []string{"backfill", "--max-latency-rise", "-5ms"}, want: "--max-latency-rise -5ms: use a duration such as 5ms"},
		{args: []string{"backfill", "--max-threads-running", "-1"}, want: "--max-threads-running"},
		{args: []string{"backfill", "--critical-threads-running", "-1"}, want: "--critical-threads-running"},
		{args: []string{"backfill", "--max-threads-running", "50", "--critical-threads-running", "10"}, want: "--max-threads-running"},
		{args: []string{"backfill", "--max-replica-lag", "-1s"}, want: "--max-replica-lag"},
		{args: []string{"backfill", "--progress-every", "0s"}, want: "--progress-every"},
		{args: []string{"backfill", "--replica-password-file", pw}, want: "--replica-password-file"},
		{args: []string{"run", "--replica-tls", "bogus"}, want: "--replica-tls, --replica-tls-ca, --replica-tls-cert, --replica-tls-key or --replica-server-public-key without --replica-dsn"},
		{args: []string{"backfill", "--replica-tls-ca", "/nonexistent"}, want: "without --replica-dsn"},
		{args: []string{"backfill", "--replica-dsn", "nonsense"}, want: "--replica-dsn"},
		{args: []string{"backfill", "--admin-token-file", empty}, want: "--admin-token-file"},
		{args: []string{"backfill", "--chunk-time", "soon"}, want: "--chunk-time"},
		// Every command's common flags.
		{args: []string{"preflight", "--source-table", "nodot"}, want: "--source-table"},
		{args: []string{"preflight", "--target-table", "a.b.c"}, want: "--target-table"},
		{args: []string{"preflight", "--source-password-file", empty}, want: "--source-password-file"},
		{args: []string{"preflight", "--target-password-file", filepath.Join(dir, "missing")}, want: "--target-password-file"},
		{args: []string{"preflight", "--source-dsn", "csmh@tcp(" + rec.ln.Addr().String() + ")/?sql_mode=%27NO_BACKSLASH_ESCAPES%27"}, want: "sql_mode"},
		{args: []string{"preflight", "--target-dsn", "csmh@tcp(" + rec.ln.Addr().String() + ")/?@@SESSION.SQL_MODE=%27%27"}, want: "@@SESSION.SQL_MODE"},
		{args: []string{"preflight", "--target-dsn", "csmh@tcp(" + rec.ln.Addr().String() + ")/?allowAllFiles=true"}, want: "allowAllFiles"},
		{args: []string{"preflight", "--log-format", "xml"}, want: "--log-format"},
		{args: []string{"preflight", "--log-level", "loud"}, want: "--log-level"},
		{args: []string{"preflight", "--server-id", "-1"}, want: "server-id"},
		{args: []string{"preflight", "--no-such-flag"}, want: "no-such-flag"},
		{args: []string{"status", "--connect-timeout", "0s"}, want: "--connect-timeout"},
		{args: []string{"status", "--source-dsn", "", "--source-tls", "required"}, want: "--source-tls, --source-tls-ca, --source-tls-cert, --source-tls-key or --source-server-public-key without --source-dsn"},
		{args: []string{"status", "--metrics-addr", "9104"}, want: "--metrics-addr"},
		{args: []string{"verify", "--chunk-rows", "0"}, want: "--chunk-rows"},
		{args: []string{"verify", "--workers", "0"}, want: "--workers"},
		{args: []string{"verify", "--catch-up-timeout", "0s"}, want: "--catch-up-timeout"},
		{args: []string{"verify", "--repair-deadline", "0s"}, want: "--repair-deadline"},
		{args: []string{"verify", "--mode", "fast"}, want: "--mode"},
		{args: []string{"verify", "--mode", "count", "--repair"}, want: "--repair"},
		{args: []string{"verify", "--start-id", "9", "--end-id", "3"}, want: "--start-id"},
		{args: []string{"cutover", "--timeout", "0s"}, want: "--timeout"},
		{args: []string{"cutover", "--workers", "65"}, want: "--workers"},
		{args: []string{"cutover", "--mode", "fast"}, want: "--mode"},
		// From the environment, the same checks.
		{args: []string{"run"}, env: []string{"CSMH_CHUNK_BYTES=-1"}, want: "--chunk-bytes"},
		{args: []string{"run"}, env: []string{"CSMH_APPLY_LANES=0"}, want: "--apply-lanes"},
		{args: []string{"verify"}, env: []string{"CSMH_WORKERS=x"}, want: "CSMH_WORKERS"},
	})
}

// badFlag is a command line (and environment) that must be refused with one line naming want.
type badFlag struct {
	args []string
	env  []string // KEY=value
	want string   // in the one line
}

// requireRefused runs each case after the base flags and requires exit 2, one line naming the flag, and no
// connection opened to the recorder.
func requireRefused(t *testing.T, rec *recorder, base []string, cases []badFlag) {
	t.Helper()
	for _, tc := range cases {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			// The case's flags come after the base ones: the last of a repeated flag wins.
			args := append([]string{tc.args[0]}, append(append([]string(nil), base...), tc.args[1:]...)...)
			var out, errb bytes.Buffer
			code := cli(args, &out, &errb)
			msg := strings.TrimSpace(errb.String())
			if code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and one line naming %s", code, msg, tc.want)
			}
			if n := rec.connections(t); n != 0 {
				t.Errorf("%d connections were opened before the flag was refused", n)
			}
		})
	}
}

// A password typed into --*-dsn is named in a warning that recommends the password file, not an environment
// variable (/proc/PID/environ and docker inspect show those), and never repeats the password.
func TestPasswordInDSNWarning(t *testing.T) {
	clearCSMHEnv(t)
	var out, errb bytes.Buffer
	code := cli([]string{"status", "--target-dsn", "csmh:hunter2@tcp(127.0.0.1:1)/", "--connect-timeout", "-1s"}, &out, &errb)
	s := errb.String()
	if code != 2 || !strings.Contains(s, "warning: --target-dsn carries a password") || !strings.Contains(s, "--target-password-file") ||
		strings.Contains(s, "CSMH_") || strings.Contains(s, "hunter2") {
		t.Fatalf("exit %d, stderr:\n%s", code, s)
	}
}

// A password or token file other users can read is named in one warning line, and the command goes on.
func TestReadableSecretFileWarned(t *testing.T) {
	clearCSMHEnv(t)
	rec := newRecorder(t)
	dsn := "csmh@tcp(" + rec.ln.Addr().String() + ")/"
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := cli([]string{"status", "--target-dsn", dsn, "--target-password-file", p, "--connect-timeout", "1s", "--metrics-addr", ""}, &out, &errb)
	s := errb.String()
	if code != 2 || strings.Count(s, "readable by every user") != 1 || !strings.Contains(s, "--target-password-file "+p) || strings.Contains(s, "secret\n") {
		t.Fatalf("exit %d, stderr:\n%s", code, s)
	}
	if rec.connections(t) == 0 {
		t.Fatal("the warning stopped the command; it should only warn")
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	cli([]string{"status", "--target-dsn", dsn, "--target-password-file", p, "--connect-timeout", "1s", "--metrics-addr", ""}, &out, &errb)
	if strings.Contains(errb.String(), "readable by") {
		t.Fatalf("a 0600 file was warned about:\n%s", errb.String())
	}
}

// A flag the parser does not understand, or an argument it does not expect, is quoted in the error without the
// password of a DSN in it: a single-dash flag (Go's flag package's spelling) and a space after '=', with a
// password holding a space, a DSN without tcp(…), a URL.
func TestMistypedDSNFlagHidesThePassword(t *testing.T) {
	clearCSMHEnv(t)
	for _, args := range [][]string{
		{"run", "-source-dsn=csmh:S3cretPw@tcp(db:3306)/"},
		{"run", "--source-dsn=", "csmh:S3cretPw@tcp(db:3306)/"},
		{"verify", "-target-dsn=csmh:S3cretPw@unix(/run/mysqld/mysqld.sock)/"},
		{"run", "-source-dsn=csmh:S3cret Pw@tcp(db:3306)/"},
		{"run", "-source-dsn=csmh:S3cretPw@db:3306/"},
		{"run", "--source-dsn=", "mysql://csmh:S3cretPw@db:3306/edxapp"},
	} {
		var out, errb bytes.Buffer
		code := cli(args, &out, &errb)
		msg := strings.TrimSpace(errb.String())
		if code != 2 || strings.Contains(msg, "S3cret") || !strings.Contains(msg, ":xxxxx@") || strings.Contains(msg, "\n") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and one line quoting the DSN without its password", args, code, msg)
		}
	}
}

// The password typed where its file's path goes is refused in one line that names the flag and the fix, and
// never repeats it: the error reaches logs that the command line does not.
func TestPasswordGivenForItsFileIsNotRepeated(t *testing.T) {
	clearCSMHEnv(t)
	dsn := "csmh@tcp(127.0.0.1:1)/"
	for _, flag := range []string{"--source-password-file", "--target-password-file"} {
		var out, errb bytes.Buffer
		code := cli([]string{"preflight", "--source-dsn", dsn, "--target-dsn", dsn, "--metrics-addr", "", flag, "S3cret/Pw"}, &out, &errb)
		msg := strings.TrimSpace(errb.String())
		if code != 2 || strings.Contains(msg, "S3cret") || !strings.Contains(msg, flag) || !strings.Contains(msg, "give the path of a file") || strings.Contains(msg, "\n") {
			t.Errorf("%s S3cret/Pw: exit %d, stderr %q; want 2 and one line naming %s and the fix, without the password", flag, code, msg, flag)
		}
	}
}
