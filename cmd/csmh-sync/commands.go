package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/runner"
)

// withLog fills the logger and output once flags are parsed (the logger depends on --log-format).
type withLog struct {
	command
	bind func()
}

func (w withLog) Validate() error { w.bind(); return w.command.Validate() }

func (w withLog) Run(ctx context.Context) (int, error) { return w.command.Run(ctx) }

func buildPreflight(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	p := &runner.Preflight{}
	commonFlags(fs, &p.Common, lf)
	fs.BoolVar(&p.JSON, "json", false, "print the findings as JSON")
	return withLog{p, func() { p.Out, p.Log = env.stdout, env.log }}
}

func buildStatus(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	s := &runner.Status{}
	commonFlags(fs, &s.Common, lf)
	fs.BoolVar(&s.JSON, "json", false, "print the status as JSON")
	return withLog{s, func() { s.Out, s.Log = env.stdout, env.log }}
}
