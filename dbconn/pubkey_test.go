package dbconn_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
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
