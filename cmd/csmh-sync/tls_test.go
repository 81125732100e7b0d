package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every bad TLS flag, from the command line or CSMH_*, exits 2 with one line naming it before any connection is
// opened; verify-identity without a CA file (the system's roots) is good and goes on to connect.
func TestTLSFlagsExitBeforeConnecting(t *testing.T) {
	clearCSMHEnv(t)
	rec := newRecorder(t)
	addr := rec.ln.Addr().String()
	dsn := "csmh@tcp(" + addr + ")/"
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	base := []string{"--source-dsn", dsn, "--target-dsn", dsn, "--metrics-addr", "", "--connect-timeout", "1s"}

	requireRefused(t, rec, base, []badFlag{
		{args: []string{"run", "--source-tls", "on"}, want: `--source-tls "on": use disabled, preferred`},
		{args: []string{"run", "--target-tls", "verify-ca", "--target-tls-ca", missing}, want: "--target-tls-ca"},
		{args: []string{"run", "--target-tls", "verify-identity", "--target-tls-ca", ca}, want: "--target-tls-ca " + ca + " holds no PEM certificate"},
		{args: []string{"preflight", "--source-tls", "required", "--source-tls-ca", ca}, want: "set --source-tls verify-ca or verify-identity"},
		{args: []string{"status", "--target-tls-cert", ca}, want: "--target-tls-cert and --target-tls-key go together"},
		{args: []string{"verify", "--source-tls", "required", "--source-tls-key", ca}, want: "--source-tls-cert and --source-tls-key go together"},
		{args: []string{"cutover", "--source-tls", "disabled", "--source-tls-cert", ca, "--source-tls-key", ca}, want: "--source-tls disabled, yet"},
		{args: []string{"backfill", "--replica-dsn", dsn, "--replica-tls", "verify"}, want: "--replica-tls"},
		{args: []string{"backfill", "--replica-dsn", dsn, "--replica-tls-cert", ca}, want: "--replica-tls-cert and --replica-tls-key"},
		{args: []string{"run", "--source-dsn", dsn + "?tls=true", "--source-tls", "required"}, want: "--source-dsn has tls=true and --source-tls* flags are set too"},
		{args: []string{"run", "--target-dsn", dsn + "?tls=custom"}, want: "--target-dsn has tls=custom, which names no TLS configuration"},
		{args: []string{"run"}, env: []string{"CSMH_TARGET_TLS=bogus"}, want: `--target-tls "bogus"`},
		{args: []string{"run"}, env: []string{"CSMH_SOURCE_TLS=verify-ca", "CSMH_SOURCE_TLS_CA=" + missing}, want: "--source-tls-ca"},
		{args: []string{"backfill", "--replica-dsn", dsn}, env: []string{"CSMH_REPLICA_TLS_KEY=" + ca}, want: "--replica-tls-cert and --replica-tls-key"},
	})

	// Good settings get past Validate and connect (to the recorder, which hangs up: exit 2).
	for _, tc := range []struct {
		args []string
		env  []string
	}{
		{args: []string{"run", "--source-tls", "verify-identity", "--target-tls", "required"}},
		{args: []string{"preflight"}, env: []string{"CSMH_SOURCE_TLS=verify-ca", "CSMH_TARGET_TLS=disabled"}},
		{args: []string{"status", "--target-dsn", dsn + "?tls=skip-verify"}},
	} {
		t.Run("good "+strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			args := append([]string{tc.args[0]}, append(append([]string(nil), base...), tc.args[1:]...)...)
			var out, errb bytes.Buffer
			if code := cli(args, &out, &errb); code != 2 {
				t.Fatalf("exit %d against a server that hangs up, want 2\n%s", code, errb.String())
			}
			if n := rec.connections(t); n == 0 {
				t.Fatalf("no connection: the settings were refused\n%s", errb.String())
			}
		})
	}
}
