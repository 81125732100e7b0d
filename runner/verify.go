package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/verify"
)

// Verify is `csmh-sync verify`: a one-shot comparison of the migrated id range. While a migration is under way
// (a checkpoint exists) it first waits until the target has applied everything the source has executed, and
// re-checks a differing chunk after another catch-up before calling it different.
type Verify struct {
	Common
	Mode           string
	StartID, EndID uint64
	ChunkRows      int
	Workers        int
	Incremental    bool
	Repair         bool
	RepairDeadline time.Duration
	CatchUpTimeout time.Duration
	JSON           bool
	Out            io.Writer
	TTY            bool
	Log            *slog.Logger
}

// Validate checks every flag, before anything connects.
func (v *Verify) Validate() error {
	if err := v.Common.Validate(); err != nil {
		return err
	}
	if _, err := verify.ParseMode(v.Mode); err != nil {
		return fmt.Errorf("%w: --mode %q: use count, checksum or rows", ErrUsage, v.Mode)
	}
	if v.Repair && v.Mode == string(verify.ModeCount) {
		return fmt.Errorf("%w: --repair needs --mode checksum or rows (count mode finds no ids)", ErrUsage)
	}
	if v.EndID != 0 && v.StartID > v.EndID {
		return fmt.Errorf("%w: --start-id %d is above --end-id %d", ErrUsage, v.StartID, v.EndID)
	}
	if v.ChunkRows < 1 {
		return fmt.Errorf("%w: --chunk-rows %d: use 1 or more", ErrUsage, v.ChunkRows)
	}
	if err := checkWorkers(v.Workers); err != nil {
		return err
	}
	return positive(flagDuration{"--catch-up-timeout", v.CatchUpTimeout}, flagDuration{"--repair-deadline", v.RepairDeadline})
}

// checkWorkers checks verify's and cutover's --workers.
func checkWorkers(n int) error {
	if n < 1 || n > 64 {
		return fmt.Errorf("%w: --workers %d: use 1 to 64", ErrUsage, n)
	}
	return nil
}

// Run compares and prints; exit 0 equal, 1 different, 2 error.
func (v *Verify) Run(ctx context.Context) (int, error) {
	workers := max(v.Workers, 2)
	k, err := v.open(ctx, v.Log, 2*workers+2)
	if err != nil {
		return ExitError, err
	}
	defer k.Close()
	mode, _ := verify.ParseMode(v.Mode)
	cfg := verify.Config{SourceTable: v.SourceTable, TargetTable: v.TargetTable, Mode: mode, StartID: v.StartID,
		EndID: v.EndID, ChunkRows: v.ChunkRows, Workers: v.Workers, Incremental: v.Incremental, Repair: v.Repair,
		RepairDeadline: v.RepairDeadline}
	store := checkpoint.New(k.dst, v.TargetTable.Schema)
	st, err := store.Load(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrNone):
		v.Log.Info("no checkpoint: comparing the tables as they are, without a replication catch-up")
	case err != nil:
		return ExitError, err
	default:
		cfg.IDBoundary = st.IDBoundary
		cfg.Plan = planID(st)
		cfg.CatchUp = func(ctx context.Context) error {
			wctx, cancel := context.WithTimeout(ctx, v.CatchUpTimeout)
			defer cancel()
			_, err := catchUp(wctx, k.src, store, st.Flavor, 200*time.Millisecond)
			return err
		}
	}
	if v.TTY && !v.JSON {
		cfg.Progress = func(done, total int) {
			fmt.Fprintf(v.Out, "\rverify: %d/%d chunks", done, total)
		}
	}
	ver, err := verify.New(k.src, k.dst, metrics.Discard(), v.Log, cfg)
	if err != nil {
		return ExitError, err
	}
	res, err := ver.Run(ctx)
	if cfg.Progress != nil {
		fmt.Fprintln(v.Out)
	}
	if err != nil {
		return ExitError, err
	}
	if v.JSON {
		enc := json.NewEncoder(v.Out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		res.Print(v.Out)
	}
	if !res.Equal {
		return ExitNegative, nil
	}
	return ExitOK, nil
}

// planID names the checkpoint's migration plan for verify's ledger (verify.Config.Plan): its first start and
// the span of its backfill segments. A migration started over, or a plan extended, gets another name, and the
// chunks proven equal before vouch for nothing in it; segments split between workers keep their span.
func planID(st *checkpoint.State) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s", st.SourceTable, st.TargetTable, st.CreatedAt.UTC().Format(time.RFC3339Nano))
	if lo, hi, ok := checkpoint.Span(st.Segments); ok {
		fmt.Fprintf(h, "|%d-%d", lo, hi)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
