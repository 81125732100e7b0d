package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/runner"
)

type pending struct{ name string }

func (p pending) Validate() error { return nil }
func (p pending) Run(context.Context) (int, error) {
	return runner.ExitError, errors.New(p.name + " is not implemented yet")
}

func buildVerify(fs *pflag.FlagSet, lf *logFlags, env *environ) command  { return pending{"verify"} }
func buildCutover(fs *pflag.FlagSet, lf *logFlags, env *environ) command { return pending{"cutover"} }
