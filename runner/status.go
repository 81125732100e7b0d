package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
)

// Status is `csmh-sync status`: it reads the checkpoint from the target and, when the source is given,
// compares the position with what the source has executed.
type Status struct {
	Common
	JSON bool
	Out  io.Writer
	Log  *slog.Logger
}

// StatusReport is what status prints.
type StatusReport struct {
	Stage              string `json:"stage"` // not-started | backfill | backfill-stopped | streaming
	SourceTable        string `json:"source_table"`
	TargetTable        string `json:"target_table"`
	GTID               string `json:"gtid"`
	SourceExecuted     string `json:"source_executed,omitempty"`
	TransactionsBehind int64  `json:"transactions_behind"` // -1 unknown
	// LagSeconds is 0 when nothing is behind; otherwise the age of the last applied source change, an upper
	// bound of the lag (the oldest change not applied is newer); -1 unknown. The daemon's
	// csmh_sync_replication_lag_seconds is exact.
	LagSeconds    float64              `json:"lag_seconds"`
	LastEventAt   *time.Time           `json:"last_event_at,omitempty"`
	CheckpointAt  time.Time            `json:"checkpoint_at"`
	IDBoundary    uint64               `json:"id_boundary"`
	RowsCopied    uint64               `json:"backfill_rows_copied"`
	BackfillRatio float64              `json:"backfill_progress_ratio"`
	BackfillDone  bool                 `json:"backfill_done"`
	Applied       checkpoint.Counters  `json:"applied"`
	Segments      []checkpoint.Segment `json:"segments"`
	// Stops are the stages that stopped for a reason of their own and were not started again since: a
	// backfill stopped beside a running stream, or the stream whose stop ended the daemon.
	Stops []checkpoint.StageStop `json:"stops"`
}

// Validate checks the flags; the source is optional for status.
func (s *Status) Validate() error {
	return s.Common.validate(s.Source.DSN != "")
}

// Run prints the report. Exit 2 when there is no checkpoint.
func (s *Status) Run(ctx context.Context) (int, error) {
	dst, _, err := dbconn.Open(ctx, s.Target, dbconn.Options{DialTimeout: s.ConnectTimeout, MaxOpenConns: 2, Log: s.Log})
	if err != nil {
		return ExitError, err
	}
	defer dst.Close()
	st, err := checkpoint.New(dst, s.TargetTable.Schema).Load(ctx)
	if errors.Is(err, checkpoint.ErrNone) {
		return ExitError, fmt.Errorf("no checkpoint in %s: the migration has not started (run 'csmh-sync run')", s.TargetTable.Schema)
	}
	if err != nil {
		return ExitError, err
	}
	rep := buildStatus(st)
	if s.Source.DSN != "" {
		s.addSource(ctx, rep, st)
	}
	if s.JSON {
		enc := json.NewEncoder(s.Out)
		enc.SetIndent("", "  ")
		return ExitOK, enc.Encode(rep)
	}
	printStatus(s.Out, rep)
	return ExitOK, nil
}

func buildStatus(st *checkpoint.State) *StatusReport {
	rep := &StatusReport{SourceTable: st.SourceTable, TargetTable: st.TargetTable, GTID: st.GTID,
		TransactionsBehind: -1, LagSeconds: -1, CheckpointAt: st.UpdatedAt, IDBoundary: st.IDBoundary,
		Applied: st.Applied, Segments: st.Segments, Stops: st.Stops}
	if rep.Stops == nil {
		rep.Stops = []checkpoint.StageStop{}
	}
	if !st.LastEventAt.IsZero() {
		t := st.LastEventAt
		rep.LastEventAt = &t
	}
	var total, done uint64
	rep.BackfillDone = len(st.Segments) > 0
	for _, g := range st.Segments {
		rep.RowsCopied += g.Rows
		span := g.End - g.Start + 1
		total += span
		done += span - g.Remaining()
		rep.BackfillDone = rep.BackfillDone && g.Done
	}
	if total > 0 {
		rep.BackfillRatio = float64(done) / float64(total)
	}
	switch {
	case len(st.Segments) == 0:
		rep.Stage = "not-started"
	case !rep.BackfillDone && stopped(st.Stops, checkpoint.StageBackfill):
		rep.Stage = "backfill-stopped"
	case !rep.BackfillDone:
		rep.Stage = "backfill"
	default:
		rep.Stage = "streaming"
	}
	return rep
}

func stopped(stops []checkpoint.StageStop, stage string) bool {
	for _, st := range stops {
		if st.Stage == stage {
			return true
		}
	}
	return false
}

func (s *Status) addSource(ctx context.Context, rep *StatusReport, st *checkpoint.State) {
	src, _, err := dbconn.Open(ctx, s.Source, dbconn.Options{DialTimeout: s.ConnectTimeout, MaxOpenConns: 1, Log: s.Log})
	if err != nil {
		s.Log.Warn("source unreachable; position not compared", "err", err)
		return
	}
	defer src.Close()
	// In file mode the source's current file/position; "behind" then counts bytes of binlog.
	e, err1 := sourcePosition(ctx, src, st.Flavor, gtid.IsFilePos(st.GTID))
	c, err2 := gtid.Parse(st.Flavor, st.GTID)
	if err1 != nil || err2 != nil {
		return
	}
	rep.SourceExecuted = e.String()
	rep.TransactionsBehind = c.Behind(e)
	if rep.TransactionsBehind == 0 {
		rep.LagSeconds = 0
	} else if rep.LastEventAt != nil {
		rep.LagSeconds = time.Since(*rep.LastEventAt).Seconds()
	}
}

func printStatus(w io.Writer, r *StatusReport) {
	fmt.Fprintf(w, "stage:        %s\n", r.Stage)
	fmt.Fprintf(w, "tables:       %s → %s\n", r.SourceTable, r.TargetTable)
	fmt.Fprintf(w, "backfill:     %.1f%% of the id range, %d rows copied, done=%v\n", 100*r.BackfillRatio, r.RowsCopied, r.BackfillDone)
	for _, st := range r.Stops {
		fmt.Fprintf(w, "stopped:      %s at %s, %s: %s; to continue: %s\n", st.Stage, st.At.Format(time.RFC3339), st.Reason, st.Message, stopFix(st))
	}
	fmt.Fprintf(w, "position:     %s (checkpoint at %s)\n", r.GTID, r.CheckpointAt.Format(time.RFC3339))
	if r.TransactionsBehind >= 0 {
		lag := "0s"
		switch {
		case r.TransactionsBehind > 0 && r.LagSeconds >= 0:
			lag = fmt.Sprintf("at most %.1fs (the last applied change's age)", r.LagSeconds)
		case r.TransactionsBehind > 0:
			lag = "unknown (nothing applied yet)"
		}
		unit := "transactions"
		if gtid.IsFilePos(r.GTID) {
			unit = "bytes of binlog"
		}
		fmt.Fprintf(w, "behind:       %d %s, lag %s (source at %s)\n", r.TransactionsBehind, unit, lag, r.SourceExecuted)
	} else {
		fmt.Fprintf(w, "behind:       unknown (give --source-dsn to compare with the source)\n")
	}
	fmt.Fprintf(w, "applied:      %d transactions, %d inserts, %d updates, %d deletes\n", r.Applied.Transactions, r.Applied.Inserts, r.Applied.Updates, r.Applied.Deletes)
	fmt.Fprintf(w, "id boundary:  %d (copied ids stay below)\n", r.IDBoundary)
}
