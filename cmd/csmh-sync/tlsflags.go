package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// tlsFlags binds --<role>-tls, -tls-ca, -tls-cert, -tls-key and --<role>-server-public-key.
func tlsFlags(fs *pflag.FlagSet, role string, t *dbconn.TLS) {
	fs.StringVar(&t.Mode, role+"-tls", "", "TLS to the "+role+": "+strings.Join(dbconn.TLSModes, ", ")+
		" (default: the DSN's tls=, else preferred); the binlog connection follows the source's")
	fs.StringVar(&t.CA, role+"-tls-ca", "", "PEM file of the CA(s) that sign the "+role+"'s certificate, for verify-ca and verify-identity (default: the system's roots)")
	fs.StringVar(&t.Cert, role+"-tls-cert", "", "PEM file of a client certificate for the "+role+" (a user created REQUIRE X509)")
	fs.StringVar(&t.Key, role+"-tls-key", "", "PEM file of the client certificate's key")
	fs.StringVar(&t.ServerPublicKey, role+"-server-public-key", "", "PEM file of the "+role+"'s RSA public key (its public_key.pem), for a caching_sha2_password login without TLS (without it, and without TLS, such a login is refused)")
}
