package dbconn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// pki is a CA with a server certificate for "localhost" only and a client certificate, as PEM files.
type pki struct {
	dir                            string
	ca, serverCert, serverKey      string
	clientCert, clientKey, otherCA string
	caPool                         *x509.CertPool
	serverPair                     tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey, caCert := p.issue(t, "ca", nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	p.ca = filepath.Join(p.dir, "ca.pem")
	p.issue(t, "server", caKey, caCert, &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	p.serverCert, p.serverKey = filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server-key.pem")
	p.issue(t, "client", caKey, caCert, &x509.Certificate{Subject: pkix.Name{CommonName: "csmh"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	p.clientCert, p.clientKey = filepath.Join(p.dir, "client.pem"), filepath.Join(p.dir, "client-key.pem")
	p.issue(t, "other", nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "another CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	p.otherCA = filepath.Join(p.dir, "other.pem")
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(caCert)
	var err error
	if p.serverPair, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue writes name.pem and name-key.pem: tmpl signed by parent (self-signed when parent is nil).
func (p *pki) issue(t *testing.T, name string, parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	write(t, filepath.Join(p.dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(t, filepath.Join(p.dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return key, cert
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Every bad TLS setting is refused by Config, which every command's Validate runs before anything connects,
// with one line naming the flag.
func TestTLSSettingsRefused(t *testing.T) {
	p := newPKI(t)
	notPEM := filepath.Join(p.dir, "not.pem")
	write(t, notPEM, []byte("hello"))
	dsn := "csmh@tcp(db.example.com:3306)/"
	for _, c := range []struct {
		name string
		dsn  string
		tls  dbconn.TLS
		want string
	}{
		{"bad mode", dsn, dbconn.TLS{Mode: "on"}, `--source-tls "on": use disabled, preferred, required, verify-ca, verify-identity`},
		{"missing CA file", dsn, dbconn.TLS{Mode: "verify-ca", CA: filepath.Join(p.dir, "nope.pem")}, "--source-tls-ca: open"},
		{"unreadable CA file", dsn, dbconn.TLS{Mode: "verify-ca", CA: p.dir}, "--source-tls-ca: read"},
		{"CA file not PEM", dsn, dbconn.TLS{Mode: "verify-identity", CA: notPEM}, "holds no PEM certificate"},
		{"cert without key", dsn, dbconn.TLS{Mode: "required", Cert: p.clientCert}, "--source-tls-cert and --source-tls-key go together"},
		{"key without cert", dsn, dbconn.TLS{Mode: "required", Key: p.clientKey}, "--source-tls-cert and --source-tls-key go together"},
		{"cert and key do not match", dsn, dbconn.TLS{Mode: "required", Cert: p.clientCert, Key: p.serverKey}, "--source-tls-cert"},
		{"CA with a mode that does not verify", dsn, dbconn.TLS{Mode: "required", CA: p.ca}, "set --source-tls verify-ca or verify-identity"},
		{"CA with the default mode", dsn, dbconn.TLS{CA: p.ca}, "set --source-tls verify-ca or verify-identity"},
		{"files with disabled", dsn, dbconn.TLS{Mode: "disabled", Cert: p.clientCert, Key: p.clientKey}, "--source-tls disabled, yet"},
		{"verify-identity on a unix socket", "csmh@unix(/run/mysqld.sock)/", dbconn.TLS{Mode: "verify-identity"}, "needs a host name"},
		{"DSN tls= and the flag", dsn + "?tls=true", dbconn.TLS{Mode: "verify-ca"}, "--source-dsn has tls=true and --source-tls* flags are set too"},
		{"DSN tls= and a CA flag", dsn + "?tls=skip-verify", dbconn.TLS{CA: p.ca}, "remove tls= from the DSN"},
		{"DSN names a TLS configuration", dsn + "?tls=custom", dbconn.TLS{}, "--source-dsn has tls=custom, which names no TLS configuration"},
		{"DSN allows a fallback", dsn + "?tls=true&allowFallbackToPlaintext=true", dbconn.TLS{}, "use --source-tls preferred"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := dbconn.Endpoint{Role: "source", DSN: c.dsn, TLS: c.tls}.Config()
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Config = %v, want one line with %q", err, c.want)
			}
		})
	}
}

// The modes, from flags or from the DSN's tls= values, make the configurations they name; preferred alone lets
// the driver fall back to plaintext (dbconn.Open settles it before the pool and the binlog connection use it).
func TestTLSModes(t *testing.T) {
	p := newPKI(t)
	for _, c := range []struct {
		name                string
		dsn                 string
		tls                 dbconn.TLS
		plaintext, fallback bool
		skipVerify, checkCA bool
		serverName          string
	}{
		{name: "default", dsn: "u@tcp(db:3306)/", fallback: true, skipVerify: true},
		{name: "disabled", dsn: "u@tcp(db:3306)/", tls: dbconn.TLS{Mode: "disabled"}, plaintext: true},
		{name: "preferred", dsn: "u@tcp(db:3306)/", tls: dbconn.TLS{Mode: "preferred"}, fallback: true, skipVerify: true},
		{name: "required", dsn: "u@tcp(db:3306)/", tls: dbconn.TLS{Mode: "required"}, skipVerify: true},
		{name: "verify-ca", dsn: "u@tcp(db:3306)/", tls: dbconn.TLS{Mode: "verify-ca", CA: p.ca}, skipVerify: true, checkCA: true},
		{name: "verify-identity", dsn: "u@tcp(db.example.com:3306)/", tls: dbconn.TLS{Mode: "verify-identity"}, serverName: "db.example.com"},
		{name: "DSN tls=false", dsn: "u@tcp(db:3306)/?tls=false", plaintext: true},
		{name: "DSN tls=true", dsn: "u@tcp(db.example.com:3306)/?tls=true", serverName: "db.example.com"},
		{name: "DSN tls=skip-verify", dsn: "u@tcp(db:3306)/?tls=skip-verify", skipVerify: true},
		{name: "DSN tls=preferred", dsn: "u@tcp(db:3306)/?tls=preferred", fallback: true, skipVerify: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := dbconn.Endpoint{Role: "source", DSN: c.dsn, TLS: c.tls}.Config()
			if err != nil {
				t.Fatal(err)
			}
			if c.plaintext {
				if cfg.TLS != nil || cfg.AllowFallbackToPlaintext {
					t.Fatalf("TLS %v, fallback %v: want plaintext", cfg.TLS, cfg.AllowFallbackToPlaintext)
				}
				return
			}
			if cfg.TLS == nil {
				t.Fatal("no TLS configuration")
			}
			tc := cfg.TLS
			if cfg.AllowFallbackToPlaintext != c.fallback || tc.InsecureSkipVerify != c.skipVerify ||
				(tc.VerifyConnection != nil) != c.checkCA || tc.ServerName != c.serverName || cfg.TLSConfig != "" {
				t.Fatalf("fallback %v, skip-verify %v, chain check %v, server name %q, DSN name %q",
					cfg.AllowFallbackToPlaintext, tc.InsecureSkipVerify, tc.VerifyConnection != nil, tc.ServerName, cfg.TLSConfig)
			}
		})
	}
}

// handshake runs a TLS handshake between the endpoint's client configuration and a server presenting the
// test's server certificate; clientCA makes the server require a client certificate signed by it.
func handshake(t *testing.T, p *pki, e dbconn.Endpoint, clientCA bool) error {
	t.Helper()
	cfg, err := e.Config()
	if err != nil {
		t.Fatal(err)
	}
	sc := &tls.Config{Certificates: []tls.Certificate{p.serverPair}}
	if clientCA {
		sc.ClientAuth, sc.ClientCAs = tls.RequireAndVerifyClientCert, p.caPool
	}
	// A loopback socket, not net.Pipe: both sides may write at once (a flight and an alert) without waiting.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		b, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		_ = b.SetDeadline(time.Now().Add(time.Minute)) // a safety net: each side closes at its first error
		s := tls.Server(b, sc)
		err = s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1}) // TLS 1.3: the client's certificate is checked after the client's Finished
		}
		srvErr <- err
		b.Close()
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_ = a.SetDeadline(time.Now().Add(time.Minute))
	c := tls.Client(a, cfg.TLS)
	err = c.Handshake()
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	a.Close()
	if serr := <-srvErr; err == nil {
		err = serr
	}
	return err
}

// Real handshakes: verify-ca trusts any name the CA signed and nothing another CA signed; verify-identity also
// wants the DSN's host in the certificate; a client certificate is presented when given.
func TestTLSVerification(t *testing.T) {
	p := newPKI(t)
	for _, c := range []struct {
		name     string
		host     string
		tls      dbconn.TLS
		clientCA bool
		want     string // "" = success
	}{
		{"verify-ca, the CA, another name", "127.0.0.1", dbconn.TLS{Mode: "verify-ca", CA: p.ca}, false, ""},
		{"verify-ca, another CA", "localhost", dbconn.TLS{Mode: "verify-ca", CA: p.otherCA}, false, "not signed by a trusted CA"},
		{"verify-ca, system roots", "localhost", dbconn.TLS{Mode: "verify-ca"}, false, "not signed by a trusted CA"},
		{"verify-identity, the CA, its name", "localhost", dbconn.TLS{Mode: "verify-identity", CA: p.ca}, false, ""},
		{"verify-identity, the CA, another name", "127.0.0.1", dbconn.TLS{Mode: "verify-identity", CA: p.ca}, false, "127.0.0.1"},
		{"verify-identity, another CA", "localhost", dbconn.TLS{Mode: "verify-identity", CA: p.otherCA}, false, "unknown authority"},
		{"required trusts anything", "127.0.0.1", dbconn.TLS{Mode: "required"}, false, ""},
		{"client certificate wanted, none given", "localhost", dbconn.TLS{Mode: "verify-identity", CA: p.ca}, true, "certificate"},
		{"client certificate", "localhost", dbconn.TLS{Mode: "verify-identity", CA: p.ca, Cert: p.clientCert, Key: p.clientKey}, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := dbconn.Endpoint{Role: "source", DSN: "u@tcp(" + c.host + ":3306)/", TLS: c.tls}
			err := handshake(t, p, e, c.clientCA)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("handshake = %v, want an error with %q", err, c.want)
			}
		})
	}
}
