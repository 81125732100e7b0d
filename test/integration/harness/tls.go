package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TLSFiles are the PEM files MakeTLS writes: a CA, a server certificate and key it signed, and a client
// certificate and key it signed (for a user created REQUIRE X509). Options.TLS starts a server with them.
type TLSFiles struct {
	CA, CAKey             string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

var serial atomic.Int64

// MakeTLS makes the files in dir with Debian's openssl: EC P-256 keys, valid for two days; the server
// certificate names serverNames (DNS names or IP addresses) in its subjectAltName, and nothing else.
func MakeTLS(ctx context.Context, dir string, serverNames ...string) (TLSFiles, error) {
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem")}
	bin, err := exec.LookPath("openssl")
	if err != nil {
		return f, fmt.Errorf("harness: openssl not found: install Debian's openssl (make deps does it)")
	}
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("harness: openssl %s: %w: %s", args[0], err, tail(string(out), 5))
		}
		return nil
	}
	key := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	if err := run(append(append([]string{"req", "-x509"}, key...), "-keyout", f.CAKey, "-out", f.CA, "-days", "2",
		"-subj", "/CN=csmh-sync test CA "+filepath.Base(dir), "-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")...); err != nil {
		return f, err
	}
	var sans []string
	for _, n := range serverNames {
		if net.ParseIP(n) != nil {
			sans = append(sans, "IP:"+n)
		} else {
			sans = append(sans, "DNS:"+n)
		}
	}
	leaf := func(name, cert, keyFile, ext string) error {
		csr, extFile := cert+".csr", cert+".ext"
		if err := os.WriteFile(extFile, []byte(ext+"\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"), 0o600); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
		if err := run(append(append([]string{"req"}, key...), "-keyout", keyFile, "-out", csr, "-subj", "/CN="+name)...); err != nil {
			return err
		}
		return run("x509", "-req", "-in", csr, "-CA", f.CA, "-CAkey", f.CAKey, "-days", "2", "-out", cert, "-extfile", extFile,
			"-set_serial", fmt.Sprint(time.Now().UnixNano()+serial.Add(1)))
	}
	if err := leaf("csmh-sync test server", f.ServerCert, f.ServerKey,
		"subjectAltName="+strings.Join(sans, ",")+"\nextendedKeyUsage=serverAuth"); err != nil {
		return f, err
	}
	if err := leaf("csmh", f.ClientCert, f.ClientKey, "extendedKeyUsage=clientAuth"); err != nil {
		return f, err
	}
	return f, nil
}

// MakeTLST is MakeTLS in a directory of the test's own, failing the test on error.
func MakeTLST(t testing.TB, serverNames ...string) TLSFiles {
	t.Helper()
	f, err := MakeTLS(context.Background(), t.TempDir(), serverNames...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *TLSFiles) args() []string {
	if f == nil {
		return nil
	}
	return []string{"--ssl-ca=" + f.CA, "--ssl-cert=" + f.ServerCert, "--ssl-key=" + f.ServerKey}
}
