package dbconn_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/fakemysql"
)

// writeKey writes k's public half as the server writes public_key.pem (PKIX, "PUBLIC KEY").
func writeKey(t *testing.T, k *rsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "public_key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048) // MySQL's auto-generated key pair is RSA 2048
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A MySQL 8.4 server without TLS asks a caching_sha2_password user who is not in its cache for full
// authentication (fakemysql.StartCachingSHA2, the exchange MySQL documents). Unguarded, both clients would
// fetch the server's RSA key over plaintext and encrypt the password with whatever key arrives. Guarded: with no
// pinned key the login is refused with MySQL's own 2061 "Authentication requires secure connection", naming the
// flags, and no password packet leaves; with the server's key pinned (--source-server-public-key) the password
// goes out under that key, and the server decrypts it; with another key pinned, a key sent by the server is
// refused before the password is sent.
func TestCachingSHA2FullAuthWithoutTLS(t *testing.T) {
	server := rsaKey(t)
	open := func(fake *fakemysql.Server, keyFile string) error {
		e := dbconn.Endpoint{Role: "source", DSN: "csmh:" + secret + "@tcp(" + fake.Addr() + ")/",
			TLS: dbconn.TLS{Mode: dbconn.TLSDisabled, ServerPublicKey: keyFile}}
		_, _, err := dbconn.Open(context.Background(), e, dbconn.Options{DialTimeout: 2 * time.Second})
		return err
	}
	binlog := func(fake *fakemysql.Server, keyFile string) error {
		e := dbconn.Endpoint{Role: "source", DSN: "csmh:" + secret + "@tcp(" + fake.Addr() + ")/",
			TLS: dbconn.TLS{Mode: dbconn.TLSDisabled, ServerPublicKey: keyFile}}
		cfg, err := e.Config()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Timeout = 2 * time.Second
		return binlogLogin(t, fake.Addr(), nil, dbconn.BinlogDialer(cfg))
	}
	t.Run("unguarded go-mysql sends it", func(t *testing.T) {
		fake := fakemysql.StartCachingSHA2(t, server)
		binlogLogin(t, fake.Addr(), nil, nil)
		if got := fake.Passwords(); len(got) != 1 || got[0] != secret {
			t.Fatalf("the fake decrypted %q from an unguarded client, want the password: the test proves nothing", got)
		}
	})
	for name, login := range map[string]func(*fakemysql.Server, string) error{"sql": open, "binlog": binlog} {
		t.Run(name+" without a key", func(t *testing.T) {
			fake := fakemysql.StartCachingSHA2(t, server)
			err := login(fake, "")
			if err == nil || !strings.Contains(err.Error(), "2061") || !strings.Contains(err.Error(), "Authentication requires secure connection") ||
				!strings.Contains(err.Error(), "--source-tls required") || !strings.Contains(err.Error(), "--source-server-public-key") {
				t.Fatalf("login = %v, want 2061 naming --source-tls and --source-server-public-key", err)
			}
			if got := fake.Passwords(); len(got) != 0 {
				t.Fatalf("the server decrypted %d password packets, want none", len(got))
			}
			if got, _ := fake.Received(); bytes.Contains(got, []byte(secret)) {
				t.Fatal("the password reached the server")
			}
		})
		t.Run(name+" with the server's key", func(t *testing.T) {
			fake := fakemysql.StartCachingSHA2(t, server)
			_ = login(fake, writeKey(t, server)) // the fake denies access once it has the password
			if got := fake.Passwords(); len(got) != 1 || got[0] != secret {
				t.Fatalf("the server decrypted %q, want the password once", got)
			}
		})
		t.Run(name+" with another key", func(t *testing.T) {
			fake := fakemysql.StartCachingSHA2(t, server)
			err := login(fake, writeKey(t, rsaKey(t)))
			if err == nil {
				t.Fatal("the login succeeded")
			}
			if got := fake.Passwords(); len(got) != 0 {
				t.Fatalf("the server decrypted %q under a key that is not the pinned one", got)
			}
			if name == "binlog" && !strings.Contains(err.Error(), "not the one in --source-server-public-key") {
				t.Errorf("binlog login = %v, want the key refusal", err)
			}
		})
	}
}

// A key file that holds no RSA public key is refused before anything connects, naming the flag.
func TestServerPublicKeyFileIsChecked(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(t.TempDir(), "missing.pem")} {
		e := dbconn.Endpoint{Role: "target", DSN: "csmh@tcp(127.0.0.1:1)/", TLS: dbconn.TLS{ServerPublicKey: path}}
		if _, err := e.Config(); err == nil || !strings.Contains(err.Error(), "--target-server-public-key") {
			t.Errorf("key file %s: %v, want a refusal naming --target-server-public-key", path, err)
		}
	}
	e := dbconn.Endpoint{Role: "target", DSN: "csmh@tcp(127.0.0.1:1)/", TLS: dbconn.TLS{ServerPublicKey: writeKey(t, rsaKey(t))}}
	cfg, err := e.Config()
	if err != nil || cfg.ServerPubKey == "" {
		t.Fatalf("a good key: %v (ServerPubKey %q)", err, cfg.ServerPubKey)
	}
}

// An impostor hands out its own RSA key in a shape the guard once took for no key at all, and both clients,
// which find the key with pem.Decode, would take for one: after a newline, under another PEM label, or, after
// caching_sha2_password's request for the key, in a packet that starts as an OK packet (go-mysql does not look at
// its first byte). Unguarded, go-mysql and go-sql-driver encrypt the password with the impostor's key (which
// shows each disguise works); guarded, with no key pinned or with the real server's key pinned, the login is
// refused naming the flags and the impostor decrypts nothing. A sha256_password key packet with no PEM block at
// all, on which go-mysql would dereference nil and bring the process down, is refused too. With the real
// server's key pinned and sent plainly, sha256_password still logs in under it.
func TestDisguisedServerKeyIsRefused(t *testing.T) {
	real, impostor := rsaKey(t), rsaKey(t)
	newline := func(pemKey []byte) []byte { return append([]byte("\x01\n"), pemKey...) }
	rsaLabel := func(pemKey []byte) []byte {
		block, _ := pem.Decode(pemKey)
		return append([]byte{0x01}, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: block.Bytes})...)
	}
	okHeader := func(pemKey []byte) []byte { return append([]byte{0x00}, pemKey...) }
	disguises := []struct {
		name   string
		rsa    fakemysql.RSA
		sqlToo bool // go-sql-driver reads this key too (it never asks for caching_sha2_password's key when one is pinned)
	}{
		{"sha256_password, key after a newline", fakemysql.RSA{Plugin: "sha256_password", KeyPacket: newline}, true},
		{"sha256_password, RSA PUBLIC KEY label", fakemysql.RSA{Plugin: "sha256_password", KeyPacket: rsaLabel}, true},
		{"caching_sha2_password, key after a newline", fakemysql.RSA{KeyPacket: newline}, false},
		{"caching_sha2_password, key in an OK packet", fakemysql.RSA{KeyPacket: okHeader}, false},
	}
	endpoint := func(fake *fakemysql.Server, keyFile string) dbconn.Endpoint {
		return dbconn.Endpoint{Role: "source", DSN: "csmh:" + secret + "@tcp(" + fake.Addr() + ")/",
			TLS: dbconn.TLS{Mode: dbconn.TLSDisabled, ServerPublicKey: keyFile}}
	}
	sqlLogin := func(fake *fakemysql.Server, keyFile string) error {
		_, _, err := dbconn.Open(context.Background(), endpoint(fake, keyFile), dbconn.Options{DialTimeout: 2 * time.Second})
		return err
	}
	binlog := func(fake *fakemysql.Server, keyFile string) error {
		cfg, err := endpoint(fake, keyFile).Config()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Timeout = 2 * time.Second
		return binlogLogin(t, fake.Addr(), nil, dbconn.BinlogDialer(cfg))
	}
	for _, d := range disguises {
		t.Run(d.name+": unguarded clients send it", func(t *testing.T) {
			fake := fakemysql.StartRSA(t, impostor, d.rsa)
			binlogLogin(t, fake.Addr(), nil, nil)
			want := 1
			if d.sqlToo {
				db, err := sql.Open("mysql", "csmh:"+secret+"@tcp("+fake.Addr()+")/?timeout=2s&allowPublicKeyRetrieval=true")
				if err != nil {
					t.Fatal(err)
				}
				_ = db.Ping()
				_ = db.Close()
				want = 2
			}
			if got := fake.Passwords(); len(got) != want || got[0] != secret {
				t.Fatalf("the impostor decrypted %q from unguarded clients, want the password %d times: the test proves nothing", got, want)
			}
		})
		for _, pin := range []string{"none", "the real server's key"} {
			logins := map[string]func(*fakemysql.Server, string) error{"binlog": binlog}
			if d.sqlToo {
				logins["sql"] = sqlLogin
			}
			for name, login := range logins {
				t.Run(d.name+": "+name+", pinned "+pin, func(t *testing.T) {
					keyFile, wantFlag := "", "--source-tls required"
					if pin != "none" {
						keyFile, wantFlag = writeKey(t, real), "not the one in --source-server-public-key"
					}
					fake := fakemysql.StartRSA(t, impostor, d.rsa)
					err := login(fake, keyFile)
					if err == nil || !strings.Contains(err.Error(), wantFlag) {
						t.Errorf("login = %v, want a refusal naming %q", err, wantFlag)
					}
					if got := fake.Passwords(); len(got) != 0 {
						t.Fatalf("the impostor decrypted %q", got)
					}
				})
			}
		}
	}
	t.Run("caching_sha2_password, an empty packet for the key: binlog refuses without crashing", func(t *testing.T) {
		fake := fakemysql.StartRSA(t, impostor, fakemysql.RSA{KeyPacket: func([]byte) []byte { return []byte{} }})
		if err := binlog(fake, writeKey(t, real)); err == nil || !strings.Contains(err.Error(), "empty packet during the login") {
			t.Errorf("login = %v, want the empty packet refused", err)
		}
	})
	t.Run("sha256_password, no PEM block: binlog refuses without crashing", func(t *testing.T) {
		fake := fakemysql.StartRSA(t, impostor, fakemysql.RSA{Plugin: "sha256_password",
			KeyPacket: func([]byte) []byte { return []byte("\x01not a key") }})
		if err := binlog(fake, ""); err == nil || !strings.Contains(err.Error(), "--source-server-public-key") {
			t.Errorf("login = %v, want a refusal naming --source-server-public-key", err)
		}
	})
	for name, login := range map[string]func(*fakemysql.Server, string) error{"sql": sqlLogin, "binlog": binlog} {
		t.Run("sha256_password, the real server's key, pinned: "+name+" logs in under it", func(t *testing.T) {
			fake := fakemysql.StartRSA(t, real, fakemysql.RSA{Plugin: "sha256_password"})
			_ = login(fake, writeKey(t, real)) // the fake denies access once it has the password
			if got := fake.Passwords(); len(got) != 1 || got[0] != secret {
				t.Fatalf("the server decrypted %q, want the password once", got)
			}
		})
	}
}
