package runner

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/verify"
)

// OwnTables lists the tables csmh-sync creates in the target table's schema: the checkpoint's and verify's.
func OwnTables() []string { return append(slices.Clone(checkpoint.Tables), verify.Tables...) }

// Preflight is `csmh-sync preflight`.
type Preflight struct {
	Common
	JSON bool
	Out  io.Writer
	Log  *slog.Logger
}

// Validate checks the flags.
func (p *Preflight) Validate() error { return p.Common.Validate() }

// Run prints one line per check and returns the exit code: 0 when nothing failed, 2 otherwise.
func (p *Preflight) Run(ctx context.Context) (int, error) {
	ck, err := preflight.New(p.Log, preflight.Config{Source: p.Source, Target: p.Target, SourceTable: p.SourceTable,
		TargetTable: p.TargetTable, OwnTables: OwnTables(), ProbeTable: checkpoint.ProbeTable, ServerID: p.ServerID, Timeout: p.ConnectTimeout,
		Position: p.Position})
	if err != nil {
		return ExitError, err
	}
	rep := ck.Run(ctx)
	if p.JSON {
		enc := json.NewEncoder(p.Out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.Print(p.Out)
	}
	if rep.Failed() {
		return ExitError, nil
	}
	return ExitOK, nil
}
