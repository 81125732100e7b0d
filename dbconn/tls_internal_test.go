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
