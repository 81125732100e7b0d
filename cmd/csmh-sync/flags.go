package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/internal/secretfile"
	"github.com/csmh-sync/csmh-sync/runner"
)

// commonFlags binds the flags every command takes.
func commonFlags(fs *pflag.FlagSet, c *runner.Common, lf *logFlags) {
	fs.StringVar(&c.Source.DSN, "source-dsn", "", "source server, go-sql-driver form user[:pass]@tcp(host:port)/ (prefer a password file)")
	fs.StringVar(&c.Target.DSN, "target-dsn", "", "target server, go-sql-driver form user[:pass]@tcp(host:port)/")
	fs.StringVar(&c.Source.PasswordFile, "source-password-file", "", "file holding the source password (overrides the DSN's)")
	fs.StringVar(&c.Target.PasswordFile, "target-password-file", "", "file holding the target password (overrides the DSN's)")
	tlsFlags(fs, "source", &c.Source.TLS)
	tlsFlags(fs, "target", &c.Target.TLS)
	fs.StringVar(&c.SourceTableName, "source-table", "edxapp.courseware_studentmodulehistory", "source table, database.table")
	fs.StringVar(&c.TargetTableName, "target-table", "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended", "target table, database.table")
	fs.Uint32Var(&c.ServerID, "server-id", 1042, "server id of the binlog client; must differ from every server's id")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9104", "listen address for /metrics, /healthz, /readyz, POST /pause, POST /resume (empty = off; the POSTs need --admin-token-file on a non-loopback address)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 5e9, "how long to wait for a server to answer (positive)")
	fs.StringVar(&lf.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&lf.level, "log-level", "info", "log level: debug, info, warn, error")
}

// applyEnv fills every flag not given on the command line from CSMH_<FLAG> (dashes become underscores).
// It runs after parsing, so environment values never show up as defaults in --help.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		name := "CSMH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %v", name, redactValue(f.Name, e.Error()))
			}
		}
	})
	return err
}

func redactValue(flag, msg string) string {
	if strings.Contains(flag, "dsn") {
		return "invalid value"
	}
	return msg
}

// warnReadableSecrets (called after Validate) names each secret file other users can read.
func warnReadableSecrets(fs *pflag.FlagSet, log *slog.Logger) {
	fs.VisitAll(func(f *pflag.Flag) {
		if v := f.Value.String(); v != "" && (strings.HasSuffix(f.Name, "-password-file") || strings.HasSuffix(f.Name, "-token-file") || strings.HasSuffix(f.Name, "-tls-key")) {
			if w := secretfile.Warning("--"+f.Name, v); w != "" {
				log.Warn(w)
			}
		}
	})
}

// warnPasswordInArgs (called before applyEnv) tells the operator when a password was typed on the command line, where ps shows it.
func warnPasswordInArgs(fs *pflag.FlagSet, stderr io.Writer) {
	for _, name := range []string{"source-dsn", "target-dsn", "replica-dsn"} {
		f := fs.Lookup(name)
		if f == nil || !f.Changed {
			continue
		}
		if user, _, ok := strings.Cut(f.Value.String(), "@"); ok && strings.Contains(user, ":") {
			fmt.Fprintf(stderr, "warning: --%s carries a password that ps can show: put it in a file readable only by this user and pass --%s-password-file\n",
				name, strings.TrimSuffix(name, "-dsn"))
		}
	}
}
