// Command csmh-sync migrates Open edX's courseware_studentmodulehistory table into
// coursewarehistoryextended_studentmodulehistoryextended with zero downtime. This file only wires flags,
// the environment, signals and logging to the commands in package runner.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/buildinfo"
	"github.com/csmh-sync/csmh-sync/runner"
)

// command is what every subcommand provides.
type command interface {
	Validate() error
	Run(ctx context.Context) (int, error)
}

type spec struct {
	name, summary string
	build         func(fs *pflag.FlagSet, lf *logFlags, env *environ) command
}

// environ carries what commands need from the process.
type environ struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	tty            bool
}

var commands = []spec{
	{"preflight", "check that the migration can run (exit 0 yes, 2 no with one line per problem)", buildPreflight},
	{"run", "the daemon: binlog streaming + backfill until stopped, with /metrics /healthz /readyz", buildRun},
	{"backfill", "one-shot backfill of the id range, then exit", buildBackfill},
	{"verify", "compare source and target (exit 0 equal, 1 different, 2 error)", buildVerify},
	{"status", "print progress and checkpoint read from the target database", buildStatus},
	{"cutover", "wait until the target has applied everything, verify, print GO or NO-GO (exit 0 only on GO)", buildCutover},
	{"version", "print the version", nil},
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "csmh-sync %s: zero-downtime migration of courseware_studentmodulehistory to its 64-bit successor\n\n", buildinfo.Version)
	fmt.Fprintf(w, "Usage: csmh-sync <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nEvery flag can also come from the environment as CSMH_<FLAG> (e.g. CSMH_SOURCE_DSN); the flag wins.\n")
	fmt.Fprintf(w, "Exit codes: 0 success, 1 negative verdict (verify: different; cutover: NO-GO), 2 error.\n")
	fmt.Fprintf(w, "Run 'csmh-sync <command> --help' for a command's flags.\n")
}

func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return runner.ExitError
		}
		return runner.ExitOK
	}
	name := args[0]
	if name == "version" || name == "--version" {
		fmt.Fprintf(stdout, "csmh-sync %s (%s)\n", buildinfo.Version, buildinfo.GoVersion())
		return runner.ExitOK
	}
	var sp *spec
	for i := range commands {
		if commands[i].name == name {
			sp = &commands[i]
		}
	}
	if sp == nil || sp.build == nil {
		fmt.Fprintf(stderr, "csmh-sync: unknown command %q: run 'csmh-sync --help' for the list\n", name)
		return runner.ExitError
	}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: csmh-sync %s [flags]\n\n%s\n\nFlags (each also from CSMH_<FLAG>):\n%s", name, sp.summary, fs.FlagUsages())
	}
	lf := &logFlags{}
	env := &environ{stdout: stdout, stderr: stderr, tty: isTerminal(stdout)}
	cmd := sp.build(fs, lf, env)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return runner.ExitOK
		}
		// The parser quotes the argument it stumbled on, which may be a DSN with its password.
		fmt.Fprintf(stderr, "csmh-sync %s: %s (see --help)\n", name, redactArgs(err.Error(), args[1:]))
		return runner.ExitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "csmh-sync %s: unexpected argument %s (see --help)\n", name, strconv.Quote(dbconn.RedactArg(fs.Arg(0))))
		return runner.ExitError
	}
	warnPasswordInArgs(fs, stderr)
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "csmh-sync %s: %v\n", name, err)
		return runner.ExitError
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "csmh-sync %s: %v\n", name, err)
		return runner.ExitError
	}
	env.log = log
	if err := cmd.Validate(); err != nil {
		fmt.Fprintf(stderr, "csmh-sync %s: %s\n", name, oneLine(err))
		return runner.ExitError
	}
	warnReadableSecrets(fs, log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := cmd.Run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "csmh-sync %s: %s\n", name, oneLine(err))
		if code == runner.ExitOK {
			code = runner.ExitError
		}
	}
	return code
}

func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	return strings.TrimPrefix(s, runner.ErrUsage.Error()+": ")
}

type logFlags struct{ format, level string }

func (lf *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(lf.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", lf.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch lf.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", lf.format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// redactArgs replaces, in a message of the flag parser, every argument that may hold a password (one with an
// '@') by its redacted form (dbconn.RedactArg).
func redactArgs(msg string, args []string) string {
	for _, a := range args {
		if r := dbconn.RedactArg(a); r != a {
			msg = strings.ReplaceAll(msg, a, r)
		}
	}
	return msg
}
