package integration

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// newTLSPair starts a source and a target serving TLS with a certificate for "localhost" only (certs), with the
// edX schema and the harness's users, and performance_schema on so a test can read each session's Ssl_cipher.
// plainTarget starts the target without TLS.
func newTLSPair(t *testing.T, certs *harness.TLSFiles, plainTarget bool) *pair {
	t.Helper()
	opts := harness.Options{TLS: certs, ExtraArgs: []string{"--performance-schema=ON"}}
	dstOpts := opts
	if plainTarget {
		dstOpts.TLS = nil
	}
	p := &pair{src: harness.StartT(t, opts), dst: harness.StartT(t, dstOpts)}
	ctx := context.Background()
	if err := p.src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	if err := p.dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true, TargetAutoIncrement: 50_000_000}); err != nil {
		t.Fatal(err)
	}
	return p
}

// byName is dsn with the host named localhost, the name the servers' certificate holds.
func byName(dsn string) string {
	return strings.Replace(dsn, "tcp("+harness.Host+":", "tcp(localhost:", 1)
}

// requireUser changes user@'%' on s to REQUIRE what (SSL, X509), outside the binlog.
func requireUser(t *testing.T, s *harness.Server, user, what string) {
	t.Helper()
	if err := s.Exec(context.Background(), "SET sql_log_bin = 0; ALTER USER '"+user+"'@'%' REQUIRE "+what); err != nil {
		t.Fatal(err)
	}
}

// sessions returns, for each connection of user on db's server, its command (e.g. "Binlog Dump") and its
// Ssl_cipher ("" = plaintext), as performance_schema sees them.
func sessions(db *sql.DB, user string) (map[string][]string, error) {
	rows, err := db.Query(`SELECT t.PROCESSLIST_COMMAND, COALESCE(s.VARIABLE_VALUE, '')
		FROM performance_schema.threads t
		LEFT JOIN performance_schema.status_by_thread s ON s.THREAD_ID = t.THREAD_ID AND s.VARIABLE_NAME = 'Ssl_cipher'
		WHERE t.PROCESSLIST_USER = ?`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var cmd, cipher string
		if err := rows.Scan(&cmd, &cipher); err != nil {
			return nil, err
		}
		out[cmd] = append(out[cmd], cipher)
	}
	return out, rows.Err()
}

// allEncrypted fails t unless user has a binlog dump connection (binlog) or any connection on db's server and
// every one of them is encrypted.
func allEncrypted(t *testing.T, db *sql.DB, user string, binlog bool) {
	t.Helper()
	harness.Eventually(t, time.Minute, user+"'s connections seen", func() (bool, error) {
		s, err := sessions(db, user)
		if err != nil || len(s) == 0 || binlog && len(s["Binlog Dump"]) == 0 {
			return false, err
		}
		for cmd, ciphers := range s {
			for _, c := range ciphers {
				if c == "" {
					t.Fatalf("a %q connection of %s is not encrypted (all: %v)", cmd, user, s)
				}
			}
		}
		return true, nil
	})
}

// stream makes changes on the source while the daemon runs and waits until the target has them all.
func streamAndCompare(t *testing.T, src, dst *sql.DB, d *daemon) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon output:\n%s", tailStr(d.out.String(), 40))
		}
	})
	harness.Eventually(t, 30*time.Second, "backfill done", func() (bool, error) { return backfillDone(dst) })
	for _, q := range []string{
		"UPDATE edxapp.courseware_studentmodulehistory SET grade = grade + 1 WHERE id % 7 = 0",
		"DELETE FROM edxapp.courseware_studentmodulehistory WHERE id % 11 = 0",
		`INSERT INTO edxapp.courseware_studentmodulehistory (version, created, state, grade, max_grade, student_module_id)
			VALUES ('v1', NOW(6), '{"over":"tls"}', 1, 2, 77), ('v1', NOW(6), '{"over":"tls"}', 0, 2, 78)`,
	} {
		if _, err := src.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	caughtUp(t, src, dst, time.Minute)
	requireEqual(t, src, dst)
}

// With the source's user REQUIRE SSL and the target's REQUIRE X509, the servers refuse any plaintext login of
// theirs, and the latter any without a client certificate the CA signed (both shown first). run then backfills
// and streams: every connection, the binlog connection included, was encrypted. The source is verified by name
// (verify-identity against localhost), the target by its CA (verify-ca) with a client certificate.
func TestRunOverTLSWithRequireSSLAndX509(t *testing.T) {
	certs := harness.MakeTLST(t, "localhost")
	p := newTLSPair(t, &certs, false)
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 91})
	requireUser(t, p.src, harness.SourceUser, "SSL")
	requireUser(t, p.dst, harness.TargetUser, "X509")
	srcTLS := []string{"--source-dsn", byName(p.src.SourceDSN()), "--source-tls", "verify-identity", "--source-tls-ca", certs.CA}
	dstTLS := []string{"--target-tls", "verify-ca", "--target-tls-ca", certs.CA, "--target-tls-cert", certs.ClientCert, "--target-tls-key", certs.ClientKey}

	for _, c := range []struct {
		name string
		args []string
	}{
		{"source in plaintext", append([]string{"--source-tls", "disabled"}, dstTLS...)},
		{"target without a client certificate", append(srcTLS, "--target-tls", "verify-ca", "--target-tls-ca", certs.CA)},
	} {
		r := csmh(t, time.Minute, nil, append([]string{"backfill"}, p.args(c.args...)...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "access denied") {
			t.Fatalf("%s: exit %d, want 2 with access denied: the server does not enforce its REQUIRE\n%s", c.name, r.code, r.stderr)
		}
	}

	d := startRun(t, p, append(srcTLS, dstTLS...)...)
	streamAndCompare(t, src, dst, d)
	allEncrypted(t, src, harness.SourceUser, true)
	allEncrypted(t, dst, harness.TargetUser, false)
}

// preferred (explicit for the source, the default for the target) against servers that offer TLS encrypts every
// connection, the binlog connection included, for users that would be let in without it: performance_schema
// shows each session's cipher on the servers, the Binlog Dump connection's among them.
func TestPreferredEncryptsTheBinlogConnection(t *testing.T) {
	certs := harness.MakeTLST(t, "localhost")
	p := newTLSPair(t, &certs, false)
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 2000, Seed: 92})
	d := startRun(t, p, "--source-tls", "preferred")
	streamAndCompare(t, src, dst, d)
	allEncrypted(t, src, harness.SourceUser, true)
	allEncrypted(t, dst, harness.TargetUser, false)
}

// A server whose certificate another CA signed (verify-ca), or that does not name the host of the DSN
// (verify-identity against 127.0.0.1, the certificate names localhost), or that offers no TLS (required), is
// refused: exit 2 and one line naming the fix, and nothing written to the target.
func TestTLSVerificationFailuresExitWithOneLine(t *testing.T) {
	certs := harness.MakeTLST(t, "localhost")
	other := harness.MakeTLST(t, "localhost")
	p := newTLSPair(t, &certs, true)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"verify-ca with another CA", []string{"--source-dsn", byName(p.src.SourceDSN()), "--source-tls", "verify-ca", "--source-tls-ca", other.CA},
			"the server's certificate is not signed by a trusted CA"},
		{"verify-identity with a host the certificate does not name", []string{"--source-tls", "verify-identity", "--source-tls-ca", certs.CA},
			`the server's certificate is not valid for host "127.0.0.1"`},
		{"required against a server without TLS", []string{"--target-tls", "required"}, "the server does not offer TLS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := csmh(t, time.Minute, nil, append([]string{"run", "--log-level", "warn"}, p.args(c.args...)...)...)
			msg := strings.TrimSpace(r.stderr)
			if r.code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
				t.Fatalf("exit %d, stderr %q: want 2 and one line with %q", r.code, msg, c.want)
			}
		})
	}
	dst, err := p.dst.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var n int
	if err := dst.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edxapp_csmh' AND TABLE_NAME LIKE 'csmh_sync%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d csmh_sync tables were created on the target by runs that should not have connected", n)
	}
}

// startTLSReplica starts a server serving TLS with certs as a replica of src (MASTER_USE_GTID=slave_pos, from
// the source's first GTID, so it gets the schema and rows by replication) and waits until it has the source
// table's rows. On it, user is created REQUIRE SSL with exactly the documented replica grant, outside its binlog.
func startTLSReplica(t *testing.T, certs *harness.TLSFiles, src *harness.Server, srcDB *sql.DB, user string) *harness.Server {
	t.Helper()
	ctx := context.Background()
	r := harness.StartT(t, harness.Options{TLS: certs})
	root, err := r.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	if _, err := root.Exec(fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%d, MASTER_USER='root', MASTER_USE_GTID=slave_pos",
		harness.Host, src.Port)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Exec("START SLAVE"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Exec("STOP SLAVE") })
	v, err := r.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{"SET sql_log_bin = 0", "CREATE USER '" + user + "'@'%' REQUIRE SSL"}
	for _, g := range harness.GrantSpecs(preflight.ReplicaGrants(v)) {
		stmts = append(stmts, "GRANT "+g+" TO '"+user+"'@'%'")
	}
	if err := r.Exec(ctx, strings.Join(stmts, "; ")); err != nil {
		t.Fatal(err)
	}
	var want int
	if err := srcDB.QueryRow("SELECT COUNT(*) FROM " + harness.SourceTable).Scan(&want); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "the replica to have the source's rows", func() (bool, error) {
		var got int
		err := root.QueryRow("SELECT COUNT(*) FROM " + harness.SourceTable).Scan(&got)
		if err != nil && strings.Contains(err.Error(), "doesn't exist") {
			return false, nil // the schema has not replicated yet
		}
		return got == want, err
	})
	return r
}

// --replica-dsn over TLS: a TLS-serving replica of the source, whose --replica-dsn user is REQUIRE SSL and holds
// only the documented replica grant. With --replica-tls disabled the replica refuses the login: backfill exits 2
// with one line, having copied nothing. With --replica-tls verify-ca the backfill, throttled on the replica's lag,
// completes with the target equal to the source: the replica connection was encrypted and its CA verified.
func TestBackfillReadsReplicaLagOverTLS(t *testing.T) {
	certs := harness.MakeTLST(t, "localhost")
	p := newTLSPair(t, &certs, false)
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 3000, Seed: 93})
	const user = "csmh_replica"
	replica := startTLSReplica(t, &certs, p.src, src, user)
	replicaArgs := func(mode ...string) []string {
		return append([]string{"backfill"}, p.args(append([]string{"--replica-dsn", replica.UserDSN(user, "", ""),
			"--max-replica-lag", "5s"}, mode...)...)...)
	}

	// The replica is dialled with the source and the target, before the migration lock and the first start:
	// the refusal is the one line a user sees, naming the TLS flag, and nothing is written to the target.
	r := csmh(t, time.Minute, nil, replicaArgs("--replica-tls", "disabled")...)
	msg := strings.TrimSpace(r.stderr)
	if r.code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, "replica") || !strings.Contains(msg, "access denied") ||
		!strings.Contains(msg, "--*-tls") {
		t.Fatalf("--replica-tls disabled: exit %d, stderr %q: want 2 and one line with the replica's access denied and the TLS flag", r.code, msg)
	}
	var tables int
	if err := dst.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edxapp_csmh' AND TABLE_NAME LIKE 'csmh_sync%'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("the backfill refused by the replica created %d checkpoint tables on the target", tables)
	}

	r = csmh(t, 2*time.Minute, nil, replicaArgs("--replica-tls", "verify-ca", "--replica-tls-ca", certs.CA)...)
	if r.code != 0 {
		t.Fatalf("backfill with the replica over TLS: exit %d\n%s", r.code, tailStr(r.stderr, 40))
	}
	if ok, err := backfillDone(dst); !ok || err != nil {
		t.Fatalf("backfill exited 0 but is not done: %v", err)
	}
	requireEqual(t, src, dst)
}
