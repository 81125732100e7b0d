package dbconn

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// One warning line for a plaintext connection to another host; none for loopback, sockets or TLS.
func TestPlaintextWarning(t *testing.T) {
	for _, c := range []struct {
		cfg  mysql.Config
		warn bool
	}{
		{mysql.Config{Net: "tcp", Addr: "db.example.com:3306"}, true},
		{mysql.Config{Net: "tcp", Addr: "10.0.0.7:3306"}, true},
		{mysql.Config{Net: "tcp", Addr: "[2001:db8::1]:3306"}, true},
		{mysql.Config{Net: "tcp", Addr: "127.0.0.1:3306"}, false},
		{mysql.Config{Net: "tcp", Addr: "127.0.0.2:3306"}, false},
		{mysql.Config{Net: "tcp", Addr: "[::1]:3306"}, false},
		{mysql.Config{Net: "tcp", Addr: "localhost:3306"}, false},
		{mysql.Config{Net: "unix", Addr: "/run/mysqld/mysqld.sock"}, false},
		{mysql.Config{Net: "tcp", Addr: "db.example.com:3306", TLS: tlsRequired(t)}, false},
		// go-sql-driver dials tcp4 and tcp6 too.
		{mysql.Config{Net: "tcp4", Addr: "203.0.113.9:3306"}, true},
		{mysql.Config{Net: "tcp6", Addr: "[2001:db8::5]:3306"}, true},
		{mysql.Config{Net: "tcp4", Addr: "127.0.0.1:3306"}, false},
	} {
		var buf bytes.Buffer
		warnPlaintext(slog.New(slog.NewTextHandler(&buf, nil)), "target", &c.cfg)
		lines := strings.Count(buf.String(), "\n")
		switch {
		case c.warn && (lines != 1 || !strings.Contains(buf.String(), "--target-tls") || !strings.Contains(buf.String(), c.cfg.Addr)):
			t.Errorf("%s %s: logged %q, want one warning naming --target-tls and the address", c.cfg.Net, c.cfg.Addr, buf.String())
		case !c.warn && lines != 0:
			t.Errorf("%s %s: logged %q, want nothing", c.cfg.Net, c.cfg.Addr, buf.String())
		}
	}
}

func tlsRequired(t *testing.T) *tls.Config {
	c, err := TLS{}.config(TLSRequired, "db.example.com", "--target-tls")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TLS failures read as one line naming the endpoint's flag.
func TestExplainTLS(t *testing.T) {
	e := Endpoint{Role: "source"}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("tls: %w", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "127.0.0.1"}), `not valid for host "127.0.0.1"`},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), "give the CA that signed it with --source-tls-ca"},
		{fmt.Errorf("%w (x509: unknown authority): give …", errNotSigned), "give the CA that signed it with --source-tls-ca"},
		{mysql.ErrNoTLS, "the server does not offer TLS"},
		{mysql.ErrCleartextPassword, "clear text (mysql_clear_password): refused"},
	} {
		got := e.explain(c.err, nil).Error()
		if !strings.Contains(got, c.want) || strings.Contains(got, "\n") {
			t.Errorf("explain(%v) = %q, want one line with %q", c.err, got, c.want)
		}
	}
}

// verify-identity checks the host a tcp4 or tcp6 DSN names, as it does for tcp.
func TestVerifyIdentityOverTCP46(t *testing.T) {
	for _, dsn := range []string{"csmh@tcp4(db.example.com:3306)/", "csmh@tcp6(db.example.com:3306)/"} {
		cfg, err := Endpoint{Role: "source", DSN: dsn, TLS: TLS{Mode: TLSVerifyIdentity}}.Config()
		if err != nil || cfg.TLS == nil || cfg.TLS.ServerName != "db.example.com" {
			t.Errorf("%s with verify-identity: %v; want the server name db.example.com checked", dsn, err)
		}
	}
}

// A DSN that does not parse is named without its password, and without the driver's reason, which may quote
// pieces of it (a '/' in the password splits it where the driver looks for the database name).
func TestUnparsableDSNHidesThePassword(t *testing.T) {
	for _, c := range []struct{ dsn, piece string }{
		{"csmh:Zq8rT2xK/p9LmW4@tcp(db.example:3306)", "Zq8rT2xK"},
		{"csmh:Zq8rT2xK/p9%Lm@tcp(db.example:3306)", "p9%Lm"},
	} {
		_, err := Endpoint{Role: "source", DSN: c.dsn}.Config()
		if err == nil || strings.Contains(err.Error(), c.piece) || !strings.Contains(err.Error(), "--source-password-file") {
			t.Errorf("%s: %v; want an error without %q that names --source-password-file", c.dsn, err, c.piece)
		}
	}
	// Without a password the driver's reason stays.
	if _, err := (Endpoint{Role: "source", DSN: "csmh@tcp(db.example:3306)/?x=%zz"}).Config(); err == nil || !strings.Contains(err.Error(), "does not parse (") {
		t.Errorf("a DSN without a password: %v; want the driver's reason", err)
	}
}

func TestRedactArg(t *testing.T) {
	for in, want := range map[string]string{
		"-source-dsn=csmh:S3cretPw@tcp(db:3306)/":      "-source-dsn=csmh:xxxxx@tcp(db:3306)/",
		"--source-dsn=csmh:S3cret Pw@tcp(db:3306)/":    "--source-dsn=csmh:xxxxx@tcp(db:3306)/",
		"csmh:p@ss:w0rd@tcp6([::1]:3306)/":             "csmh:xxxxx@tcp6([::1]:3306)/",
		"mysql://csmh:S3cretPw@db:3306/edxapp":         "mysql:xxxxx@db:3306/edxapp",
		"csmh:S3cretPw@db:3306/":                       "csmh:xxxxx@db:3306/",
		"--target-dsn=root:pw@/edxapp_csmh":            "--target-dsn=root:xxxxx@/edxapp_csmh",
		"u:v@cloudsql(project:region:instance)/edxapp": "u:xxxxx@cloudsql(project:region:instance)/edxapp",
		"user@tcp(db:3306)/":                           "user@tcp(db:3306)/",
		"--workers=4":                                  "--workers=4",
	} {
		if got := RedactArg(in); got != want {
			t.Errorf("RedactArg(%q) = %q, want %q", in, got, want)
		}
	}
}
