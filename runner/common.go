// Package runner orchestrates csmh-sync's commands: it loads and validates the checkpoint, starts the binlog
// stream and the backfill, serves /metrics /healthz /readyz, and implements status and cutover. The command
// line (cmd/csmh-sync) only fills these structs and calls Validate and Run.
package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

// Exit codes shared by every command.
const (
	ExitOK       = 0
	ExitNegative = 1 // a clean negative verdict: verify found differences, cutover says NO-GO
	ExitError    = 2 // bad input, failed checks, or a runtime error
)

// ErrUsage marks errors in what the operator supplied.
var ErrUsage = errors.New("usage")

// Common holds the settings every command shares.
type Common struct {
	Source          dbconn.Endpoint
	Target          dbconn.Endpoint
	SourceTableName string
	TargetTableName string
	ServerID        uint32
	MetricsAddr     string
	ConnectTimeout  time.Duration
	// Position is --position (run and backfill): auto, gtid or file; "" is auto.
	Position string

	SourceTable table.Name // filled by Validate
	TargetTable table.Name
}

// Validate parses the table names and checks the DSNs without connecting.
func (c *Common) Validate() error { return c.validate(true) }

func (c *Common) validate(needSource bool) error {
	var err error
	if c.SourceTable, err = table.ParseName(c.SourceTableName); err != nil {
		return fmt.Errorf("%w: --source-table: %v", ErrUsage, err)
	}
	if c.TargetTable, err = table.ParseName(c.TargetTableName); err != nil {
		return fmt.Errorf("%w: --target-table: %v", ErrUsage, err)
	}
	c.Source.Role, c.Target.Role = "source", "target"
	if needSource {
		if _, err := c.Source.Config(); err != nil {
			return err
		}
	}
	if _, err := c.Target.Config(); err != nil {
		return err
	}
	if !needSource {
		if err := withoutDSN(c.Source, "source"); err != nil {
			return err
		}
	}
	if err := positive(flagDuration{"--connect-timeout", c.ConnectTimeout}); err != nil {
		return err
	}
	if err := validPosition(c.Position); err != nil {
		return err
	}
	return checkListenAddr(c.MetricsAddr)
}

// withoutDSN refuses the flags of an optional endpoint given without its --<flag>-dsn: a password file, TLS
// settings or a server key that would otherwise be ignored in silence.
func withoutDSN(e dbconn.Endpoint, flag string) error {
	if e.DSN != "" {
		return nil
	}
	if e.PasswordFile != "" {
		return fmt.Errorf("%w: --%s-password-file without --%s-dsn: give both, or neither", ErrUsage, flag, flag)
	}
	if t := e.TLS; t.Mode != "" || t.CA != "" || t.Cert != "" || t.Key != "" || t.ServerPublicKey != "" {
		return fmt.Errorf("%w: --%[2]s-tls, --%[2]s-tls-ca, --%[2]s-tls-cert, --%[2]s-tls-key or --%[2]s-server-public-key without --%[2]s-dsn: give the %[2]s's DSN (CSMH_%[3]s_DSN), or drop them",
			ErrUsage, flag, strings.ToUpper(flag))
	}
	return nil
}

// flagDuration is a duration flag's name and value, for positive.
type flagDuration struct {
	flag string
	v    time.Duration
}

// positive refuses the first of the durations that is not above zero.
func positive(ds ...flagDuration) error {
	for _, d := range ds {
		if d.v <= 0 {
			return fmt.Errorf("%w: %s %s: use a positive duration, e.g. 5s", ErrUsage, d.flag, d.v)
		}
	}
	return nil
}

// conns are the open handles of one command.
type conns struct {
	src, dst *sql.DB
	srcCfg   *mysql.Config
	dstCfg   *mysql.Config
}

func (c *Common) open(ctx context.Context, log *slog.Logger, maxConns int) (*conns, error) {
	src, srcCfg, err := dbconn.Open(ctx, c.Source, dbconn.Options{DialTimeout: c.ConnectTimeout, MaxOpenConns: maxConns, Log: log})
	if err != nil {
		return nil, err
	}
	dst, dstCfg, err := dbconn.Open(ctx, c.Target, dbconn.Options{DialTimeout: c.ConnectTimeout, MaxOpenConns: maxConns, Log: log})
	if err != nil {
		src.Close()
		return nil, err
	}
	return &conns{src: src, dst: dst, srcCfg: srcCfg, dstCfg: dstCfg}, nil
}

func (k *conns) Close() error { return errors.Join(k.src.Close(), k.dst.Close()) }
