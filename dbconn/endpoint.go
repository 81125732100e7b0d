// Package dbconn opens MySQL/MariaDB connections the way every part of csmh-sync needs them: session
// behaviour pinned in one place (UTC, strict sql_mode, short lock waits), bounded dial timeouts, passwords
// read from files instead of command lines, and DSNs that are always redacted before they reach a log.
package dbconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/internal/secretfile"
)

// Endpoint names one server: a go-sql-driver DSN and, optionally, a file holding the password.
type Endpoint struct {
	Role         string // "source", "target", "replica": used in error messages
	DSN          string
	PasswordFile string
	TLS          TLS // see tls.go
}

// ErrConfig marks an error in what the operator supplied (bad DSN, unreadable password file).
var ErrConfig = errors.New("configuration error")

// Config parses the DSN, applies the password file and returns the driver configuration.
// Errors never contain the password: the DSN is echoed only in redacted form.
func (e Endpoint) Config() (*mysql.Config, error) {
	if strings.TrimSpace(e.DSN) == "" {
		return nil, fmt.Errorf("%w: --%s-dsn is empty: set it (or CSMH_%s_DSN) to user@tcp(host:port)/",
			ErrConfig, e.Role, strings.ToUpper(e.Role))
	}
	if err := e.checkDSNTLS(); err != nil {
		return nil, err
	}
	cfg, err := mysql.ParseDSN(e.DSN)
	if err != nil {
		if Redact(e.DSN) != e.DSN {
			// The driver's reason may quote pieces of the password (one holding '/' splits where the driver
			// looks for the database name): it is left out.
			return nil, fmt.Errorf("%w: --%s-dsn %q does not parse: use the form user:password@tcp(host:port)/, with the trailing '/', or give the password in --%s-password-file",
				ErrConfig, e.Role, Redact(e.DSN), e.Role)
		}
		return nil, fmt.Errorf("%w: --%s-dsn %q does not parse (%s): use the form user@tcp(host:port)/",
			ErrConfig, e.Role, e.DSN, err)
	}
	if err := e.checkParams(e.DSN, cfg); err != nil {
		return nil, err
	}
	if e.PasswordFile != "" {
		if cfg.Passwd, err = secretfile.Read("--"+e.Role+"-password-file", e.PasswordFile); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	if cfg.Net == "" {
		cfg.Net = "tcp"
	}
	if err := e.applyTLS(cfg); err != nil {
		return nil, err
	}
	if err := e.applyServerKey(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Options tune Open. The zero value is sensible.
type Options struct {
	DialTimeout     time.Duration // default 5s
	LockWaitTimeout time.Duration // innodb_lock_wait_timeout for this tool's sessions; default 5s
	MaxOpenConns    int           // default 8
	DB              string        // default database; empty = none
	Log             *slog.Logger  // where a plaintext connection to another host is warned about; default slog.Default()
}

// Open returns a *sql.DB whose every session runs with pinned settings, after proving the server answers.
// The returned error names the role and the fix and never contains the password.
func Open(ctx context.Context, e Endpoint, o Options) (*sql.DB, *mysql.Config, error) {
	cfg, err := e.Config()
	if err != nil {
		return nil, nil, err
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.LockWaitTimeout == 0 {
		o.LockWaitTimeout = 5 * time.Second
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = 8
	}
	Pin(cfg, o.LockWaitTimeout)
	cfg.Timeout = o.DialTimeout
	cfg.DBName = o.DB
	if err := settleTLS(ctx, cfg); err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", e.Role, cfg.Addr, e.explain(err, cfg))
	}
	warnPlaintext(o.Log, e.Role, cfg)
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", e.Role, err)
	}
	db := sql.OpenDB(checkingConnector{conn})
	db.SetMaxOpenConns(o.MaxOpenConns)
	db.SetMaxIdleConns(o.MaxOpenConns)
	db.SetConnMaxLifetime(time.Hour)
	pctx, cancel := context.WithTimeout(ctx, o.DialTimeout+time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("%s %s: %w", e.Role, cfg.Addr, e.explain(err, cfg))
	}
	return db, cfg, nil
}

// Pin sets the session behaviour csmh-sync relies on. Values are exchanged as text and never reinterpreted
// in a local time zone; strict mode turns truncation into errors instead of silent data change.
func Pin(cfg *mysql.Config, lockWait time.Duration) {
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	secs := int(lockWait / time.Second)
	if secs < 1 {
		secs = 1
	}
	cfg.Params["time_zone"] = "'" + pinnedTimeZone + "'"
	cfg.Params["sql_mode"] = "'" + strings.Join(pinnedSQLMode, ",") + "'"
	cfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(secs)
	// The handshake's collation sets the character set, but a server's init_connect (run before these SETs)
	// may change it: set it again, with autocommit, which init_connect may also have turned off.
	for _, v := range []string{"character_set_client", "character_set_connection", "character_set_results"} {
		cfg.Params[v] = pinnedCharset
	}
	cfg.Params["autocommit"] = "1"
	cfg.Collation = pinnedCollate
	cfg.ParseTime = false
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true
	cfg.AllowNativePasswords = true
	cfg.MaxAllowedPacket = 0 // ask the server
}

// Explain turns a driver error into one line naming the likely fix. It never includes the password.
func Explain(err error, cfg *mysql.Config) error {
	var me *mysql.MySQLError
	var ne net.Error
	msg := err.Error()
	if cfg != nil && cfg.Passwd != "" {
		msg = strings.ReplaceAll(msg, cfg.Passwd, "xxxxx")
	}
	switch {
	case errors.As(err, &me) && (me.Number == 1045 || me.Number == 1698):
		return fmt.Errorf("access denied for user %q: check the user, its password (use --*-password-file) and, for a user that requires TLS, --*-tls: %w", userOf(cfg), errors.New(msg))
	case errors.As(err, &me) && me.Number == 1049:
		return fmt.Errorf("unknown database in the DSN: remove it or create it: %w", errors.New(msg))
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer within the timeout: check host, port and firewall: %w", errors.New(msg))
	case strings.Contains(msg, "connection refused"):
		return fmt.Errorf("connection refused: is the server running and listening on that port? %w", errors.New(msg))
	case strings.Contains(msg, "no such host"):
		return fmt.Errorf("unknown host: check the host name in the DSN: %w", errors.New(msg))
	}
	return errors.New(msg)
}

func userOf(cfg *mysql.Config) string {
	if cfg == nil {
		return ""
	}
	return cfg.User
}

// RedactArg replaces the password of a command-line argument that may hold a DSN with xxxxx: everything
// between the first ':' of its value (after a "--flag=") and its last '@'. It takes no view of what a DSN looks
// like, so that a password with spaces, a URL ("mysql://user:pw@host/") or a DSN without "tcp(…)" is hidden
// too, at the price of more than the password in a URL.
func RedactArg(arg string) string {
	at := strings.LastIndex(arg, "@")
	if at < 0 {
		return arg
	}
	start := 0
	if eq := strings.Index(arg[:at], "="); eq >= 0 {
		start = eq + 1
	}
	colon := strings.Index(arg[start:at], ":")
	if colon < 0 {
		return arg
	}
	return arg[:start+colon+1] + "xxxxx" + arg[at:]
}

// Redact returns the DSN with its password replaced, for logs and errors.
func Redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	cred := dsn[:at]
	if colon := strings.Index(cred, ":"); colon >= 0 {
		return cred[:colon] + ":xxxxx" + dsn[at:]
	}
	return dsn
}
