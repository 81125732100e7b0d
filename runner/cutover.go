package runner

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/verify"
)

// Cutover is `csmh-sync cutover`: the barrier an operator (or a deploy pipeline) runs right before flipping
// edX's read flag. It prints GO only when no stage is recorded as stopped, the target has applied everything
// the source had committed, the migrated range verifies equal, and the ids the app writes to CSMHE stay clear
// of the ids CSMH still hands out.
//
// The verification uses verify's ledger: it compares only the chunks never proven equal, or touched by the
// stream since they were (verify --incremental), unless Full. A full `verify` run beforehand leaves cutover
// minutes of work instead of hours.
type Cutover struct {
	Common
	Timeout           time.Duration
	MinRunway         uint64
	BumpAutoIncrement bool
	Mode              string
	Workers           int
	Full              bool // compare every chunk, whatever the ledger says
	JSON              bool
	Out               io.Writer
	Log               *slog.Logger
}

// CutoverReport is the verdict with its reasons.
type CutoverReport struct {
	GO      bool           `json:"go"`
	Reasons []string       `json:"reasons"` // one line per check, prefixed ok/NO-GO
	GTID    string         `json:"gtid"`
	Verify  *verify.Result `json:"verify,omitempty"`
	// Checked says how much of the migrated range this cutover compared itself.
	Checked *CutoverChecked `json:"checked,omitempty"`
	// Stops are the stage stops recorded in the checkpoint (csmh_sync_stages), each a NO-GO.
	Stops []checkpoint.StageStop `json:"stops"`
}

// CutoverChecked is what cutover's verification compared, out of the whole migrated range: every chunk with
// Full, else the chunks the ledger does not vouch for (never proven equal in this plan and mode or a stronger
// one, or touched by the stream since); the rest are proven by the ledger.
type CutoverChecked struct {
	Full          bool  `json:"full"`
	ChunksChecked int   `json:"chunks_checked"`
	ChunksTotal   int   `json:"chunks_total"`
	RowsChecked   int64 `json:"rows_checked"` // source rows in the checked chunks
	RowsTotal     int64 `json:"rows_total"`   // and in all chunks (the ledger's counts for the skipped ones)
}

func (r *CutoverReport) check(ok bool, format string, a ...any) {
	word := "ok   "
	if !ok {
		word = "NO-GO"
		r.GO = false
	}
	r.Reasons = append(r.Reasons, word+" "+fmt.Sprintf(format, a...))
}

// Validate checks every flag, before anything connects.
func (c *Cutover) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if err := positive(flagDuration{"--timeout", c.Timeout}); err != nil {
		return err
	}
	if _, err := verify.ParseMode(c.Mode); err != nil {
		return fmt.Errorf("%w: --mode %q: use count, checksum or rows", ErrUsage, c.Mode)
	}
	return checkWorkers(c.Workers)
}

// Run prints GO (exit 0) or NO-GO with reasons (exit 1); errors exit 2.
func (c *Cutover) Run(ctx context.Context) (int, error) {
	k, err := c.open(ctx, c.Log, 2*max(c.Workers, 1)+2)
	if err != nil {
		return ExitError, err
	}
	defer k.Close()
	store := checkpoint.New(k.dst, c.TargetTable.Schema)
	st, err := store.Load(ctx)
	if errors.Is(err, checkpoint.ErrNone) {
		return ExitError, fmt.Errorf("no checkpoint in %s: start the migration with 'csmh-sync run' first", c.TargetTable.Schema)
	}
	if err != nil {
		return ExitError, err
	}
	rep := &CutoverReport{GO: true, Stops: st.Stops}
	if rep.Stops == nil {
		rep.Stops = []checkpoint.StageStop{}
	}
	streamStopped := false
	for _, s := range st.Stops {
		rep.check(false, "%s stopped (%s) at %s: %s; to continue: %s", s.Stage, s.Reason, s.At.Format(time.RFC3339), s.Message, stopFix(s))
		streamStopped = streamStopped || s.Stage == checkpoint.StageStream
	}
	if streamStopped {
		// Nothing applies the source's changes until the stream is started again: waiting would only use up --timeout.
		rep.Reasons = append(rep.Reasons, "skip  caught up: the stream is stopped")
	} else if err := c.checkCaughtUp(ctx, k.src, store, st.Flavor, rep); err != nil {
		return ExitError, err
	}
	if st, err = store.Load(ctx); err != nil {
		return ExitError, err
	}
	done := len(st.Segments) > 0
	for _, g := range st.Segments {
		done = done && g.Done
	}
	rep.check(done, "backfill complete: %s", map[bool]string{true: "every segment copied", false: "segments still copying: wait for 'csmh-sync status' to show done"}[done])
	if err := c.checkRunway(ctx, k.src, k.dst, store, st, rep); err != nil {
		return ExitError, err
	}
	if rep.GO {
		res, err := c.verify(ctx, k.src, k.dst, store, st)
		if err != nil {
			return ExitError, err
		}
		rep.Verify = res
		ch := &CutoverChecked{Full: c.Full, ChunksChecked: res.ChunksChecked, ChunksTotal: res.ChunksChecked + res.ChunksSkipped,
			RowsChecked: res.RowsChecked, RowsTotal: res.RowsChecked + res.RowsSkipped}
		rep.Checked = ch
		how := "full pass"
		if !c.Full {
			how = fmt.Sprintf("the other %d proven equal by the ledger and untouched since", res.ChunksSkipped)
		}
		rep.check(res.Equal, "verify %s: checked %d of %d chunks, %d of %d source rows (%s): %d missing, %d extra, %d different, %d differing chunks",
			res.Mode, ch.ChunksChecked, ch.ChunksTotal, ch.RowsChecked, ch.RowsTotal, how, res.MissingTotal, res.ExtraTotal, res.DifferentTotal, len(res.DifferentChunks))
		checkRange(st, res, rep)
	} else {
		rep.Reasons = append(rep.Reasons, "skip  verify: earlier checks said NO-GO")
	}
	c.print(rep)
	if !rep.GO {
		return ExitNegative, nil
	}
	return ExitOK, nil
}

// checkCaughtUp waits up to --timeout for the checkpoint to contain the source's executed GTIDs (in file mode,
// to reach its current binlog position).
func (c *Cutover) checkCaughtUp(ctx context.Context, src *sql.DB, store *checkpoint.Store, flavor string, rep *CutoverReport) error {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, c.Timeout)
	want, err := catchUp(wctx, src, store, flavor, 200*time.Millisecond)
	cancel()
	if want != nil {
		rep.GTID = want.String()
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rep.check(false, "caught up: %v", err)
	} else {
		what := "executed GTIDs"
		if want.IsFile() {
			what = "binlog position"
		}
		rep.check(true, "caught up: the checkpoint contains the source's %s %s (waited %s)", what, want, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func (c *Cutover) verify(ctx context.Context, src, dst *sql.DB, store *checkpoint.Store, st *checkpoint.State) (*verify.Result, error) {
	mode, _ := verify.ParseMode(c.Mode)
	cfg := verify.Config{SourceTable: c.SourceTable, TargetTable: c.TargetTable,
		Mode: mode, IDBoundary: st.IDBoundary, Workers: c.Workers, Incremental: !c.Full, Plan: planID(st),
		CatchUp: func(ctx context.Context) error {
			wctx, cancel := context.WithTimeout(ctx, c.Timeout)
			defer cancel()
			_, err := catchUp(wctx, src, store, st.Flavor, 200*time.Millisecond)
			return err
		}}
	v, err := verify.New(src, dst, metrics.Discard(), c.Log, cfg)
	if err != nil {
		return nil, err
	}
	res, err := v.Run(ctx)
	if errors.Is(err, verify.ErrLedger) && cfg.Incremental {
		// Without a usable ledger nothing is proven beforehand: every chunk is compared.
		c.Log.Warn("verify's ledger cannot be used: comparing every chunk", "err", err)
		c.Full, cfg.Incremental = true, false
		if v, err = verify.New(src, dst, metrics.Discard(), c.Log, cfg); err != nil {
			return nil, err
		}
		res, err = v.Run(ctx)
	}
	return res, err
}

// checkRange names the rows nobody copied. The backfill copies its plan's ids; the stream writes only the rows
// it sees change. So a first start with --start-id above CSMH's lowest id, or --end-id below its highest, leaves
// the rows outside the plan that existed then on the source alone, while every segment reads done. Verify
// compares the whole range below the id boundary from the lowest id either table holds, not only the plan's,
// so those rows are among the missing ones it finds: this says why, and what copies them.
func checkRange(st *checkpoint.State, res *verify.Result, rep *CutoverReport) {
	lo, hi, planned := checkpoint.Span(st.Segments)
	plan := "no ids"
	if planned {
		plan = fmt.Sprintf("ids %d..%d", lo, hi)
	}
	out := func(a, b uint64) bool { return !planned || b < lo || a > hi }
	var ids []string
	n := 0
	for _, id := range res.Missing {
		if out(id, id) {
			n++
			if len(ids) < 5 {
				ids = append(ids, strconv.FormatUint(id, 10))
			}
		}
	}
	chunks := 0
	for _, r := range res.DifferentChunks {
		if res.Mode == verify.ModeCount && r.SourceCount > r.TargetCount && out(r.Start, r.End) {
			chunks++ // count mode lists no ids, only chunks
		}
	}
	if n == 0 && chunks == 0 {
		rep.check(true, "backfill range: the plan covers %s; no source row outside it is missing in the target", plan)
		return
	}
	what := fmt.Sprintf("%d source rows outside it are missing in the target (ids %s", n, strings.Join(ids, ", "))
	if n > len(ids) {
		what += ", …"
	}
	what += ")"
	if n == 0 {
		what = fmt.Sprintf("source rows outside it are missing in the target (%d chunks with fewer target rows)", chunks)
	} else if res.MissingTotal > int64(len(res.Missing)) {
		what = "at least " + what
	}
	from, to := res.Start, res.End
	if planned {
		from, to = min(from, lo), max(to, hi)
	}
	rep.check(false, "backfill range: the backfill's plan covers only %s (a first start with --start-id or --end-id), and %s: nobody copied them; copy the whole range with 'csmh-sync backfill --start-id %d --end-id %d' while the daemon is stopped (or restart 'run' with those flags), then run cutover again",
		plan, what, from, to)
}

// checkRunway requires the first id the app writes to CSMHE — the checkpoint's id boundary (the lowest
// app-written id) or, below it, CSMHE's AUTO_INCREMENT — to stay at least MinRunway ids above CSMH's next
// id, so rows that app servers still running the old code write to CSMH during the flip can neither collide
// with rows the new code writes to CSMHE nor stop the stream at the boundary.
//
// With BumpAutoIncrement it raises CSMHE's AUTO_INCREMENT first, and then the boundary too, up to the lowest
// row at or above the old boundary (none: the new AUTO_INCREMENT). The order makes the raise safe while the
// app writes: once the ALTER has returned, no app row can land below the new AUTO_INCREMENT, so the rows
// above the old boundary that exist then are all there will ever be below it.
func (c *Cutover) checkRunway(ctx context.Context, src, dst *sql.DB, store *checkpoint.Store, st *checkpoint.State, rep *CutoverReport) error {
	s, err := table.Load(ctx, src, c.SourceTable)
	if err != nil {
		return err
	}
	t, err := table.Load(ctx, dst, c.TargetTable)
	if err != nil {
		return err
	}
	first := func() (uint64, string) {
		if st.IDBoundary > 0 && st.IDBoundary < t.AutoIncrement {
			return st.IDBoundary, "the checkpoint's id boundary, the lowest app-written CSMHE id"
		}
		return t.AutoIncrement, "CSMHE's AUTO_INCREMENT"
	}
	app, what := first()
	runway := int64(app) - int64(s.AutoIncrement)
	if runway < int64(c.MinRunway) && c.BumpAutoIncrement {
		// The ALTER runs even when the AUTO_INCREMENT is high enough already: its metadata lock waits for
		// the app's open transactions on CSMHE, so every id handed out below the AUTO_INCREMENT belongs to
		// a committed (or rolled back) row when the ALTER returns, and the read below sees all of them.
		to := max(s.AutoIncrement+c.MinRunway, t.AutoIncrement)
		if err := alterAutoIncrement(ctx, dst, c.TargetTable, to); err != nil {
			return err
		}
		if to > t.AutoIncrement {
			c.Log.Info("raised target AUTO_INCREMENT", "from", t.AutoIncrement, "to", to)
		}
		if t, err = table.Load(ctx, dst, c.TargetTable); err != nil {
			return err
		}
		if st.IDBoundary > 0 && st.IDBoundary < t.AutoIncrement {
			var low sql.NullInt64
			if err := dst.QueryRowContext(ctx, "SELECT MIN(id) FROM "+c.TargetTable.Quoted()+" WHERE id >= ?", st.IDBoundary).Scan(&low); err != nil {
				return fmt.Errorf("read the target's app-written ids: %w", err)
			}
			nb := t.AutoIncrement
			if low.Valid && uint64(low.Int64) < nb {
				nb = uint64(low.Int64)
			}
			moved, err := store.RaiseIDBoundary(ctx, st.IDBoundary, nb)
			if err != nil {
				return err
			}
			if moved {
				c.Log.Info("raised the id boundary", "from", st.IDBoundary, "to", nb)
				st.IDBoundary = nb
			}
		}
		app, what = first()
		runway = int64(app) - int64(s.AutoIncrement)
	}
	hint := ""
	if runway < int64(c.MinRunway) {
		hint = "; --bump-auto-increment raises it unless app-written CSMHE rows are in the way"
		if c.BumpAutoIncrement {
			hint = "; the app has written CSMHE rows there: make every app server write to CSMHE only, so CSMH stops growing"
		}
	}
	rep.check(runway >= int64(c.MinRunway), "id runway: the app's first CSMHE id %d (%s) is %d ids above CSMH's next id %d (need ≥ %d%s)",
		app, what, runway, s.AutoIncrement, c.MinRunway, hint)
	return nil
}

// alterAutoIncrement sets the table's AUTO_INCREMENT with a short metadata-lock wait: behind an ALTER that
// waits for a long transaction, every new query on the table would queue too.
func alterAutoIncrement(ctx context.Context, db *sql.DB, t table.Name, to uint64) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION lock_wait_timeout = 5"); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s AUTO_INCREMENT = %d", t.Quoted(), to)); err != nil {
		if dbconn.ServerError(err, 1205) {
			return fmt.Errorf("raise %s AUTO_INCREMENT to %d: a transaction held the table for over 5 s (the app's queries would have queued behind the ALTER); run cutover again", t, to)
		}
		return fmt.Errorf("raise %s AUTO_INCREMENT to %d (needs ALTER on it): %w", t, to, err)
	}
	return nil
}

func (c *Cutover) print(rep *CutoverReport) {
	if c.JSON {
		enc := json.NewEncoder(c.Out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	for _, r := range rep.Reasons {
		fmt.Fprintln(c.Out, r)
	}
	if rep.GO {
		fmt.Fprintln(c.Out, "GO: safe to set ENABLE_READING_FROM_MULTIPLE_HISTORY_TABLES=False")
	} else {
		fmt.Fprintln(c.Out, "NO-GO: do not flip the read flag yet")
	}
}
