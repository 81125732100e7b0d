package dbconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The TLS modes, in MySQL's --ssl-mode vocabulary.
const (
	TLSDisabled       = "disabled"        // plaintext
	TLSPreferred      = "preferred"       // TLS when the server offers it, decided once per start; the server is not verified
	TLSRequired       = "required"        // TLS or no connection; the server is not verified
	TLSVerifyCA       = "verify-ca"       // TLS, the server's certificate signed by the CA (any name)
	TLSVerifyIdentity = "verify-identity" // verify-ca, and the certificate names the host of the DSN
)

// TLSModes lists the modes in increasing strength.
var TLSModes = []string{TLSDisabled, TLSPreferred, TLSRequired, TLSVerifyCA, TLSVerifyIdentity}

// TLS is how one endpoint encrypts its connections: every SQL connection of its pool and, for the source, the
// binlog connection, which is handed the very same *tls.Config.
type TLS struct {
	Mode string // one of TLSModes; "" = what the DSN's tls= says, else preferred
	CA   string // PEM file of the CAs that may sign the server's certificate (verify-*); "" = the system's roots
	Cert string // PEM file of a client certificate, for a user created REQUIRE X509; needs Key
	Key  string // PEM file of the client certificate's private key
	// ServerPublicKey is a PEM file of the server's RSA public key, for caching_sha2_password (MySQL 8's default)
	// and sha256_password logins without TLS: the password is encrypted with it instead of refused (pubkey.go).
	// Not a TLS setting, but of the same connection's security, and bound with the TLS flags.
	ServerPublicKey string
}

func (t TLS) set() bool { return t.Mode != "" || t.CA != "" || t.Cert != "" || t.Key != "" }

// dsnTLSModes maps go-sql-driver's tls= values to the mode they always meant.
var dsnTLSModes = map[string]string{
	"false":       TLSDisabled,
	"true":        TLSVerifyIdentity, // the system's roots and the DSN's host, as go-sql-driver does
	"skip-verify": TLSRequired,
	"preferred":   TLSPreferred,
}

// checkDSNTLS refuses, before the driver parses the DSN, a tls= value naming a registered configuration: csmh-sync
// registers none, and the driver would only say "unknown config name".
func (e Endpoint) checkDSNTLS() error {
	for _, kv := range rawParams(e.DSN) {
		k, v, _ := strings.Cut(kv, "=")
		if k != "tls" {
			continue
		}
		switch strings.ToLower(v) {
		case "1", "0", "true", "false", "skip-verify", "preferred":
			continue
		}
		return fmt.Errorf("%w: --%s-dsn has tls=%s, which names no TLS configuration: remove it and use --%s-tls verify-identity (with --%s-tls-ca FILE for a private CA)",
			ErrConfig, e.Role, v, e.Role, e.Role)
	}
	return nil
}

// applyTLS settles the endpoint's TLS mode (the flags, else the DSN's tls=, else preferred), reads its files and
// sets cfg.TLS; nil means plaintext. Every error names the flag to fix.
func (e Endpoint) applyTLS(cfg *mysql.Config) error {
	flag := "--" + e.Role + "-tls"
	dsnMode, inDSN := dsnTLSModes[cfg.TLSConfig]
	if cfg.TLSConfig == "" {
		inDSN = false
	}
	if cfg.AllowFallbackToPlaintext && cfg.TLSConfig != "preferred" {
		return fmt.Errorf("%w: --%s-dsn has allowFallbackToPlaintext: remove it and use %s preferred", ErrConfig, e.Role, flag)
	}
	if inDSN && e.TLS.set() {
		return fmt.Errorf("%w: --%s-dsn has tls=%s and %s* flags are set too: remove tls= from the DSN", ErrConfig, e.Role, cfg.TLSConfig, flag)
	}
	mode := e.TLS.Mode
	if mode == "" {
		mode = dsnMode
	}
	if mode == "" {
		mode = TLSPreferred
	}
	host := ""
	if isTCP(cfg.Net) {
		host, _, _ = net.SplitHostPort(cfg.Addr)
	}
	tc, err := e.TLS.config(mode, host, flag)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	cfg.TLSConfig, cfg.TLS, cfg.AllowFallbackToPlaintext = "", tc, mode == TLSPreferred
	return nil
}

// config builds the *tls.Config of mode; nil for disabled.
func (t TLS) config(mode, host, flag string) (*tls.Config, error) {
	if !slices.Contains(TLSModes, mode) {
		return nil, fmt.Errorf("%s %q: use %s", flag, mode, strings.Join(TLSModes, ", "))
	}
	verify := mode == TLSVerifyCA || mode == TLSVerifyIdentity
	switch {
	case mode == TLSDisabled && (t.CA != "" || t.Cert != "" || t.Key != ""):
		return nil, fmt.Errorf("%s disabled, yet %s-ca, -cert or -key is set: choose a TLS mode or drop the files", flag, flag)
	case mode == TLSDisabled:
		return nil, nil
	case t.CA != "" && !verify:
		return nil, fmt.Errorf("%s-ca is only read to verify the server: set %s verify-ca or verify-identity", flag, flag)
	case (t.Cert == "") != (t.Key == ""):
		return nil, fmt.Errorf("%s-cert and %s-key go together: set both", flag, flag)
	case mode == TLSVerifyIdentity && host == "":
		return nil, fmt.Errorf("%s verify-identity needs a host name to check, and the DSN names none (a unix socket?): use verify-ca", flag)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("%s-cert %s with %s-key %s: %v", flag, t.Cert, flag, t.Key, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	var roots *x509.CertPool // nil: the system's roots
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("%s-ca: %v", flag, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s-ca %s holds no PEM certificate: give the CA bundle in PEM form", flag, t.CA)
		}
	}
	switch mode {
	case TLSPreferred, TLSRequired:
		c.InsecureSkipVerify = true // MySQL's meaning of these modes: encrypted, the server not authenticated
	case TLSVerifyCA:
		// crypto/tls checks a chain only together with a name; this mode checks the chain alone.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots, flag) }
	case TLSVerifyIdentity:
		c.RootCAs, c.ServerName = roots, host
	}
	return c, nil
}

// errNotSigned marks a server certificate that no trusted CA signed (verify-ca).
var errNotSigned = errors.New("the server's certificate is not signed by a trusted CA")

func verifyChain(cs tls.ConnectionState, roots *x509.CertPool, flag string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: the server sent no certificate", errNotSigned)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("%w (%v): give the CA that signed it with %s-ca", errNotSigned, err, flag)
	}
	return nil
}

// settleTLS decides preferred once, before the pool opens: a probe connection says whether the server encrypts;
// the pool and the binlog connection then both require TLS, or both go plaintext. So the binlog connection
// never falls back to plaintext where the SQL connections use TLS, and no later connection of the pool can be
// talked down to plaintext.
func settleTLS(ctx context.Context, cfg *mysql.Config) error {
	if cfg.TLS == nil || !cfg.AllowFallbackToPlaintext {
		return nil
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	wait := cfg.Timeout
	if wait <= 0 {
		wait = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait+time.Second) // as Open bounds its ping
	defer cancel()
	var name, cipher string
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		return err
	}
	cfg.AllowFallbackToPlaintext = false
	if cipher == "" {
		cfg.TLS = nil
	}
	return nil
}

// isTCP reports whether a DSN's network is TCP: go-sql-driver dials tcp4 and tcp6 as well.
func isTCP(network string) bool { return network == "tcp" || network == "tcp4" || network == "tcp6" }

// warnPlaintext logs one line when cfg talks plaintext to a host beyond this machine.
func warnPlaintext(log *slog.Logger, role string, cfg *mysql.Config) {
	if cfg.TLS != nil || !isTCP(cfg.Net) {
		return
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host = cfg.Addr
	}
	if ip := net.ParseIP(host); strings.EqualFold(host, "localhost") || (ip != nil && ip.IsLoopback()) {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	log.Warn("plaintext connection to a non-loopback host: the rows and the login cross the network unencrypted; set --"+role+"-tls verify-identity",
		"role", role, "addr", cfg.Addr)
}

// explain is Explain with the TLS failures spelled out, naming the endpoint's flags.
func (e Endpoint) explain(err error, cfg *mysql.Config) error {
	flag := "--" + e.Role + "-tls"
	var he x509.HostnameError
	var ue x509.UnknownAuthorityError
	var ie x509.CertificateInvalidError
	var re tls.RecordHeaderError
	switch {
	case errors.As(err, &he):
		return fmt.Errorf("the server's certificate is not valid for host %q (%v): connect by a name it lists, or use %s verify-ca", he.Host, err, flag)
	case errors.As(err, &ue), errors.Is(err, errNotSigned):
		return fmt.Errorf("the server's certificate is not signed by a trusted CA (%v): give the CA that signed it with %s-ca", err, flag)
	case errors.As(err, &ie):
		return fmt.Errorf("the server's certificate is not valid (%v): renew it, or check the clock", err)
	case errors.Is(err, mysql.ErrNoTLS):
		return fmt.Errorf("the server does not offer TLS: turn it on there (ssl_cert, ssl_key), or use %s preferred to allow plaintext", flag)
	case errors.As(err, &re):
		return fmt.Errorf("the server did not answer in TLS (%v): is this a MySQL server, and does it have TLS on?", err)
	case errors.Is(err, mysql.ErrCleartextPassword):
		return fmt.Errorf("the server asked for the password in clear text (mysql_clear_password): refused, csmh-sync never sends a password that way")
	}
	return Explain(err, cfg)
}
