package dbconn_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A DSN cannot undo what csmh-sync pins, however the parameter is spelled, nor let the server read local files
// or ask for the password in clear: Config refuses it with one line naming the parameter, before any connection.
func TestConfigRefusesUnsafeParams(t *testing.T) {
	for _, tc := range []struct{ params, want string }{
		{"sql_mode=%27NO_BACKSLASH_ESCAPES%27", "sql_mode"},
		{"SQL_MODE=%27ANSI_QUOTES%27", "SQL_MODE"},
		{"@@session.sql_mode=%27%27", "@@session.sql_mode"},
		{"@@SESSION.SQL_MODE=%27%27", "@@SESSION.SQL_MODE"},
		{"session.sql_mode=%27%27", "session.sql_mode"},
		{"@@local.sql_mode=%27%27", "@@local.sql_mode"},
		{"@@global.wait_timeout=10", "@@global.wait_timeout"},
		{"time_zone=%27SYSTEM%27", "time_zone"},
		{"Time_Zone=%27%2B01:00%27", "Time_Zone"},
		{"character_set_client=latin1", "character_set_client"},
		{"character_set_connection=latin1", "character_set_connection"},
		{"character_set_results=latin1", "character_set_results"},
		{"collation_connection=latin1_swedish_ci", "collation_connection"},
		{"innodb_lock_wait_timeout=100", "innodb_lock_wait_timeout"},
		{"autocommit=0", "autocommit"},
		{"sql_select_limit=10", "sql_select_limit"},
		{"charset=latin1", "charset=latin1"},
		{"collation=latin1_swedish_ci", "collation=latin1_swedish_ci"},
		{"allowAllFiles=true", "allowAllFiles=true"},
		{"allowCleartextPasswords=true", "allowCleartextPasswords=true"},
		{"allowOldPasswords=true", "allowOldPasswords=true"},
		// A value that smuggles a second assignment into the driver's `SET k=v`.
		{"wait_timeout=10,sql_mode=%27%27", "wait_timeout"},
		{"wait_timeout=10;DO%201", "wait_timeout"},
		{"`sql_mode`=%27%27", "`sql_mode`"},
	} {
		e := dbconn.Endpoint{Role: "target", DSN: "csmh:s3cret@tcp(127.0.0.1:1)/?" + tc.params}
		_, err := e.Config()
		if err == nil || !errors.Is(err, dbconn.ErrConfig) {
			t.Errorf("%s: Config() = %v, want a configuration error", tc.params, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, "--target-dsn sets "+tc.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "s3cret") {
			t.Errorf("%s: %q, want one line naming %s without the password", tc.params, msg, tc.want)
		}
	}
	// What the tool pins anyway, and session variables it does not rely on, pass.
	for _, params := range []string{"", "charset=utf8mb4", "collation=utf8mb4_general_ci", "wait_timeout=28800",
		"net_read_timeout=60&max_statement_time=0.5", "tls=false", "parseTime=true", "sql_log_bin=%27ON%27"} {
		e := dbconn.Endpoint{Role: "source", DSN: "csmh@tcp(127.0.0.1:1)/?" + params}
		if _, err := e.Config(); err != nil {
			t.Errorf("%q: %v, want accepted", params, err)
		}
	}
}

// An empty password file is refused with the flag's name; a password file's line ending is not part of the
// password; a missing file is named by its flag.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, content := range []string{"", "\n", "\r\n"} {
		e := dbconn.Endpoint{Role: "source", DSN: "csmh@tcp(127.0.0.1:1)/", PasswordFile: write("empty", content)}
		_, err := e.Config()
		if err == nil || !strings.Contains(err.Error(), "--source-password-file") || !strings.Contains(err.Error(), "is empty") {
			t.Errorf("password file %q: %v, want refused naming --source-password-file", content, err)
		}
	}
	e := dbconn.Endpoint{Role: "target", DSN: "csmh:in-dsn@tcp(127.0.0.1:1)/", PasswordFile: write("pw", "s3cret\r\n")}
	cfg, err := e.Config()
	if err != nil || cfg.Passwd != "s3cret" {
		t.Fatalf("Config() = %v, password %q; want the file's line without its ending", err, cfg.Passwd)
	}
	e.PasswordFile = filepath.Join(dir, "missing")
	if _, err := e.Config(); err == nil || !strings.Contains(err.Error(), "--target-password-file") {
		t.Fatalf("missing password file: %v", err)
	}
}

// A server whose init_connect changes the character set, sql_mode (to NO_BACKSLASH_ESCAPES), time zone and
// autocommit does not change csmh-sync's sessions: Pin sets them again after it, and every new connection reads
// them back (CheckSession) before it is used. A learner's quote and backslash round-trip unchanged.
func TestSessionPinsSurviveInitConnect(t *testing.T) {
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{BinlogOff: true, ExtraArgs: []string{
		`--init-connect=SET NAMES latin1, sql_mode='NO_BACKSLASH_ESCAPES,ANSI_QUOTES', time_zone='+05:00', autocommit=0`}})
	root := openPool(t, s, 1)
	// init_connect runs for users without SUPER / CONNECTION ADMIN only.
	for _, q := range []string{
		"CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret'",
		"CREATE DATABASE pin",
		"CREATE TABLE pin.t (id INT PRIMARY KEY, state TEXT CHARACTER SET utf8mb4)",
		"GRANT SELECT, INSERT ON pin.* TO 'app'@'%'",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// The server really applies it to this user (the proof would be void otherwise).
	plain, err := sql.Open("mysql", s.UserDSN("app", "app-secret", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var mode, cs string
	if err := plain.QueryRow("SELECT @@SESSION.sql_mode, @@SESSION.character_set_client").Scan(&mode, &cs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mode, "NO_BACKSLASH_ESCAPES") || cs != "latin1" {
		t.Fatalf("init_connect not applied to a plain session: sql_mode %q, character_set_client %q", mode, cs)
	}

	db, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: s.UserDSN("app", "app-secret", "")}, dbconn.Options{MaxOpenConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conns := make([]*sql.Conn, 3)
	for i := range conns { // three sessions, each new
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		var mode, tz, client, conn, results string
		var autocommit int
		if err := c.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@character_set_client, @@character_set_connection, @@character_set_results, @@autocommit").
			Scan(&mode, &tz, &client, &conn, &results, &autocommit); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(mode, "NO_BACKSLASH_ESCAPES") || !strings.Contains(mode, "STRICT_ALL_TABLES") || tz != "+00:00" ||
			client != "utf8mb4" || conn != "utf8mb4" || results != "utf8mb4" || autocommit != 1 {
			t.Fatalf("session %d: sql_mode %q, time_zone %q, charsets %s/%s/%s, autocommit %d: init_connect undid the pins", i, mode, tz, client, conn, results, autocommit)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	const state = `{"answer": "it's \"a\" back\\slash — ünïcødé 🎓"}`
	if _, err := db.ExecContext(ctx, "INSERT INTO pin.t VALUES (?, ?)", 1, state); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := root.QueryRow("SELECT state FROM pin.t WHERE id = 1").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != state {
		t.Fatalf("stored %q, want %q", got, state)
	}
}
