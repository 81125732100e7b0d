package dbconn

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"

	"github.com/go-sql-driver/mysql"
)

// pinnedKeys holds the server keys read from --*-server-public-key, by the name they are registered under with
// go-sql-driver (mysql.RegisterServerPubKey), so the binlog dialer finds the source's from its *mysql.Config.
var pinnedKeys sync.Map // string → *rsa.PublicKey

func pinnedKey(name string) *rsa.PublicKey {
	if name == "" {
		return nil
	}
	k, _ := pinnedKeys.Load(name)
	pk, _ := k.(*rsa.PublicKey)
	return pk
}

// applyServerKey pins the server's RSA public key, when --<role>-server-public-key names one, and guards every
// SQL connection's login (sqlDialer): caching_sha2_password's full authentication without TLS then encrypts
// the password with that key instead of one the server sends over plaintext, and without a key it is refused
// (GuardClearPassword).
func (e Endpoint) applyServerKey(cfg *mysql.Config) error {
	var key *rsa.PublicKey
	if path := e.TLS.ServerPublicKey; path != "" {
		flag := "--" + e.Role + "-server-public-key"
		var err error
		if key, err = readPublicKey(path); err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrConfig, flag, path, err)
		}
		name := "csmh-sync:" + e.Role + ":" + path
		mysql.RegisterServerPubKey(name, key)
		pinnedKeys.Store(name, key)
		cfg.ServerPubKey = name
	}
	cfg.DialFunc = sqlDialer(e.Role, key)
	return nil
}

// readPublicKey reads an RSA public key in PEM, as the server writes it (public_key.pem in its data directory,
// or SHOW STATUS LIKE 'Caching_sha2_password_rsa_public_key').
func readPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("holds no PEM block: give the server's public_key.pem")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("is not a public key in PEM (%v): give the server's public_key.pem", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("holds a %T, not an RSA public key: give the server's public_key.pem", k)
	}
	return rk, nil
}
