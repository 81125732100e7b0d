package dbconn

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// The session settings Pin gives every connection, and what CheckSession expects to read back.
const (
	pinnedTimeZone = "+00:00"
	pinnedCharset  = "utf8mb4"
	pinnedCollate  = "utf8mb4_general_ci"
)

// pinnedSQLMode is the sql_mode of every session. Without NO_BACKSLASH_ESCAPES among them, a backslash in a
// string literal escapes the quote after it, which is how the driver writes literals; with it, a learner's
// `'` in `state` would end a literal in our statements.
var pinnedSQLMode = []string{"STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION", "NO_AUTO_VALUE_ON_ZERO"}

// reservedVars are the session variables a DSN must not set: the ones Pin sets (a differently spelled key,
// SQL_MODE or @@session.sql_mode, would be applied after Pin's), and ones the statements rely on.
var reservedVars = map[string]string{
	"sql_mode":                 "csmh-sync pins the session's sql_mode",
	"time_zone":                "csmh-sync pins the session's time zone to UTC",
	"innodb_lock_wait_timeout": "csmh-sync pins the session's lock wait timeout",
	"character_set_client":     "csmh-sync pins the session's character set to utf8mb4",
	"character_set_connection": "csmh-sync pins the session's character set to utf8mb4",
	"character_set_results":    "csmh-sync pins the session's character set to utf8mb4",
	"collation_connection":     "csmh-sync pins the session's collation",
	"autocommit":               "csmh-sync's statements outside transactions rely on autocommit",
	"sql_select_limit":         "csmh-sync reads whole result sets",
}

// A DSN parameter that becomes `SET key=value` on every connection: a plain variable name, optionally
// @@-, session.- or local.-qualified.
var (
	paramKeyRE   = regexp.MustCompile(`^(?i)(@@)?((session|local|global)\.)?([a-z0-9_]+)$`)
	paramValueRE = regexp.MustCompile(`^(?:[A-Za-z0-9_.+:-]+|'[^'\\]*'|"[^"\\]*")$`)
)

// checkParams refuses a DSN that would undo what Pin sets, or let the server reach further than a query:
// one line naming the parameter. dsn is the text as typed; cfg what mysql.ParseDSN made of it.
func (e Endpoint) checkParams(dsn string, cfg *mysql.Config) error {
	refuse := func(param, why string) error {
		return fmt.Errorf("%w: --%s-dsn sets %s: %s; remove it", ErrConfig, e.Role, param, why)
	}
	if cfg.AllowAllFiles {
		return refuse("allowAllFiles=true", "it lets the server read any local file through LOAD DATA LOCAL (csmh-sync sends only its own data)")
	}
	if cfg.AllowCleartextPasswords {
		return refuse("allowCleartextPasswords=true", "it sends the password unencrypted to a server that asks for it")
	}
	if cfg.AllowOldPasswords {
		return refuse("allowOldPasswords=true", "the pre-4.1 password hash is broken")
	}
	// charset and collation are read by the driver, not passed on: look at the DSN's own text.
	for _, kv := range rawParams(dsn) {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "charset":
			if !strings.EqualFold(v, pinnedCharset) {
				return refuse("charset="+v, "csmh-sync pins the character set to "+pinnedCharset)
			}
		case "collation":
			if !strings.EqualFold(v, pinnedCollate) {
				return refuse("collation="+v, "csmh-sync pins the collation to "+pinnedCollate)
			}
		}
	}
	keys := make([]string, 0, len(cfg.Params))
	for k := range cfg.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		m := paramKeyRE.FindStringSubmatch(k)
		if m == nil {
			return refuse(k, "a DSN parameter the driver does not know becomes `SET <name>=<value>`, and this is not a variable name")
		}
		if strings.EqualFold(m[3], "global") {
			return refuse(k, "csmh-sync never changes the server's global settings")
		}
		if why, ok := reservedVars[strings.ToLower(m[4])]; ok {
			return refuse(k, why)
		}
		if !paramValueRE.MatchString(cfg.Params[k]) {
			return refuse(k, "its value must be one number, word or quoted string")
		}
	}
	return nil
}

// rawParams returns the key=value parts of the DSN's query, split as the driver splits them.
func rawParams(dsn string) []string {
	slash := strings.LastIndexByte(dsn, '/')
	if slash < 0 {
		return nil
	}
	_, query, ok := strings.Cut(dsn[slash:], "?")
	if !ok || query == "" {
		return nil
	}
	return strings.Split(query, "&")
}

// ErrSession means a connected session does not run with the settings Pin gave it: the server (init_connect,
// a proxy) changed them after csmh-sync set them.
var ErrSession = errors.New("session settings changed by the server")

// checkingConnector proves, on every new connection, that the session kept what Pin set.
type checkingConnector struct{ driver.Connector }

var _ driver.Connector = checkingConnector{}

func (c checkingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkSession(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// checkSession reads the pinned settings back from the session and compares them with Pin's.
func checkSession(ctx context.Context, conn driver.Conn) error {
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return fmt.Errorf("%w: the driver connection cannot be queried", ErrSession)
	}
	rows, err := q.QueryContext(ctx, "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.character_set_client, "+
		"@@SESSION.character_set_connection, @@SESSION.character_set_results, @@SESSION.autocommit", nil)
	if err != nil {
		return fmt.Errorf("read the session's settings: %w", err)
	}
	defer rows.Close()
	vals := make([]driver.Value, 6)
	if err := rows.Next(vals); err != nil {
		if err == io.EOF {
			err = errors.New("no row")
		}
		return fmt.Errorf("read the session's settings: %w", err)
	}
	s := make([]string, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case []byte:
			s[i] = string(v)
		case nil:
			s[i] = "NULL"
		default:
			s[i] = fmt.Sprint(v)
		}
	}
	return compareSession(s[0], s[1], s[2], s[3], s[4], s[5])
}

// compareSession names the first setting that differs from Pin's.
func compareSession(sqlMode, timeZone, csClient, csConn, csResults, autocommit string) error {
	have := strings.Split(strings.ToUpper(sqlMode), ",")
	slices.Sort(have)
	want := slices.Clone(pinnedSQLMode)
	slices.Sort(want)
	differ := func(name, got, want string) error {
		return fmt.Errorf("%w: the session's %s is %q after connecting, csmh-sync set %q: remove what changes it (init_connect, a proxy's session settings)",
			ErrSession, name, got, want)
	}
	switch {
	case !slices.Equal(have, want):
		return differ("sql_mode", sqlMode, strings.Join(pinnedSQLMode, ","))
	case timeZone != pinnedTimeZone:
		return differ("time_zone", timeZone, pinnedTimeZone)
	case !strings.EqualFold(csClient, pinnedCharset):
		return differ("character_set_client", csClient, pinnedCharset)
	case !strings.EqualFold(csConn, pinnedCharset):
		return differ("character_set_connection", csConn, pinnedCharset)
	case !strings.EqualFold(csResults, pinnedCharset):
		return differ("character_set_results", csResults, pinnedCharset)
	case autocommit != "1":
		return differ("autocommit", autocommit, "1")
	}
	return nil
}
