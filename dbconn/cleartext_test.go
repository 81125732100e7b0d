package dbconn_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/fakemysql"
)

const secret = "Tr0ub4dor-and-3-horses"

// binlogLogin runs go-mysql's binlog client against addr as BinlogSyncer does, with dial as its dialer (nil: its
// own), and returns the error of the login.
func binlogLogin(t *testing.T, addr string, tlsConfig *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	s := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: 4242, Flavor: "mariadb", Host: host,
		Port: uint16(p), User: "csmh", Password: secret, TLSConfig: tlsConfig, Dialer: dial,
		Logger: slog.New(slog.DiscardHandler), DisableRetrySync: true})
	defer s.Close()
	_, err := s.StartSync(gomysql.Position{Name: "mysql-bin.000001", Pos: 4})
	if err == nil {
		t.Fatal("the login to the impostor server succeeded")
	}
	return err
}

// The impostor asks for the password in clear text after the greeting. go-mysql's binlog client as it comes sends
// it (which shows the impostor works); through dbconn.BinlogDialer it refuses, and not one byte of the password
// reaches the server, with or without a TLS setting the server cannot meet.
func TestBinlogClientRefusesClearPassword(t *testing.T) {
	t.Run("unguarded go-mysql sends it", func(t *testing.T) {
		fake := fakemysql.Start(t, false)
		binlogLogin(t, fake.Addr(), nil, nil)
		if got, _ := fake.Received(); !bytes.Contains(got, []byte(secret)) {
			t.Fatalf("the impostor did not receive the password from an unguarded client (%d bytes): the test proves nothing", len(got))
		}
	})
	t.Run("guarded", func(t *testing.T) {
		fake := fakemysql.Start(t, false)
		cfg := &mysql.Config{Net: "tcp", Addr: fake.Addr(), Timeout: time.Second}
		err := binlogLogin(t, fake.Addr(), nil, dbconn.BinlogDialer(cfg))
		if !strings.Contains(err.Error(), "2059") || !strings.Contains(err.Error(), "clear text") {
			t.Errorf("error = %v, want the refusal (2059, clear text)", err)
		}
		var me *gomysql.MyError
		if !errors.As(err, &me) || me.Code != dbconn.ClearPasswordRefused {
			t.Errorf("error %v is not a server error %d, which the stream treats as definitive", err, dbconn.ClearPasswordRefused)
		}
		got, conns := fake.Received()
		if bytes.Contains(got, []byte(secret)) {
			t.Fatal("the password reached the impostor")
		}
		if conns != 1 {
			t.Fatalf("%d connections, want 1", conns)
		}
	})
	t.Run("TLS required, server without TLS", func(t *testing.T) {
		fake := fakemysql.Start(t, false)
		cfg := &mysql.Config{Net: "tcp", Addr: fake.Addr(), Timeout: time.Second}
		err := binlogLogin(t, fake.Addr(), &tls.Config{InsecureSkipVerify: true}, dbconn.BinlogDialer(cfg))
		if !strings.Contains(err.Error(), "TLS") {
			t.Errorf("error = %v, want the server's lack of TLS", err)
		}
		if got, _ := fake.Received(); bytes.Contains(got, []byte(secret)) {
			t.Fatal("the password reached the impostor")
		}
	})
}

// go-sql-driver, as dbconn.Open configures it, refuses the same request in every mode that can end up in
// plaintext against this server, and the password never arrives.
func TestSQLClientRefusesClearPassword(t *testing.T) {
	for _, mode := range []string{"", dbconn.TLSDisabled, dbconn.TLSPreferred} {
		t.Run("mode="+mode, func(t *testing.T) {
			fake := fakemysql.Start(t, false)
			e := dbconn.Endpoint{Role: "source", DSN: "csmh:" + secret + "@tcp(" + fake.Addr() + ")/", TLS: dbconn.TLS{Mode: mode}}
			_, _, err := dbconn.Open(context.Background(), e, dbconn.Options{DialTimeout: 2 * time.Second})
			if err == nil || !strings.Contains(err.Error(), "clear text") {
				t.Fatalf("Open = %v, want the refusal of mysql_clear_password", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the password: %v", err)
			}
			got, conns := fake.Received()
			if bytes.Contains(got, []byte(secret)) {
				t.Fatal("the password reached the impostor")
			}
			if conns == 0 {
				t.Fatal("no connection reached the impostor: the test proves nothing")
			}
		})
	}
}
