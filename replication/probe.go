package replication

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/table"
)

const (
	probeEvery   = time.Second      // transactions behind, lag, checkpoint age, retention headroom
	idProbeEvery = 10 * time.Second // source AUTO_INCREMENT: an information_schema read, kept rare
)

// purgedRemedy is what the operator must do when the binlog the position needs is gone.
func (r *Replicator) purgedRemedy() string {
	s := table.QuoteIdent(r.cfg.TargetTable.Schema)
	rows := "the copied rows of " + r.cfg.TargetTable.Quoted()
	if b := r.boundary.Load(); b > 0 {
		rows = fmt.Sprintf("the rows of %s below the id boundary %d (not the app's above it)", r.cfg.TargetTable.Quoted(), b)
	}
	return fmt.Sprintf("the copy cannot be completed from the binlog; start over (docs/runbook.md, \"Recover from a purged binlog\"): drop %s.%s, %s.%s and %s.%s, delete %s, run again, and raise the source's binlog retention",
		s, checkpoint.StateTable, s, checkpoint.BackfillTable, s, checkpoint.LanesTable, rows)
}

// checkPosition enforces purged ⊆ pos ⊆ executed on the source before streaming from pos: never start
// from a position whose binlogs are gone (the server would skip ahead silently on some versions), nor from
// one the source never reached (another server, or a source restored from a backup).
func (r *Replicator) checkPosition(ctx context.Context, pos *gtid.Set) error {
	if fp, ok := pos.FilePos(); ok {
		if r.cfg.CheckSource != nil {
			if err := r.cfg.CheckSource(ctx); err != nil {
				return err
			}
		}
		return r.checkFilePosition(ctx, fp)
	}
	f := dbconn.Flavor(r.cfg.Flavor)
	ps, err := dbconn.PurgedGTID(ctx, r.src, f)
	if err != nil {
		return err
	}
	purged, err := gtid.Parse(r.cfg.Flavor, ps)
	if err != nil {
		return fmt.Errorf("%w: purged GTIDs of the source: %v", ErrUnsupported, err)
	}
	if !pos.Contains(purged) {
		return fmt.Errorf("%w: the source has purged binlogs the checkpoint needs (checkpoint %s, purged %s): %s",
			ErrPurged, pos, purged, r.purgedRemedy())
	}
	es, err := dbconn.ExecutedGTID(ctx, r.src, f)
	if err != nil {
		return err
	}
	executed, err := gtid.Parse(r.cfg.Flavor, es)
	if err != nil {
		return fmt.Errorf("%w: executed GTIDs of the source: %v", ErrUnsupported, err)
	}
	if !executed.Contains(pos) {
		return fmt.Errorf("%w: the checkpoint %s holds transactions the source (executed %s) never wrote: is this the source the copy started from? point csmh-sync at it, or start over",
			ErrDiverged, pos, executed)
	}
	return nil
}

// checkFilePosition is checkPosition in file mode: the position's file is still on the source, and the
// offset within it.
func (r *Replicator) checkFilePosition(ctx context.Context, p gtid.FilePos) error {
	files, err := dbconn.BinaryLogs(ctx, r.src)
	if err != nil {
		return err
	}
	names, sizes := make([]string, len(files)), make([]uint64, len(files))
	for i, f := range files {
		names[i], sizes[i] = f.Name, f.Size
	}
	switch gtid.Locate(p, names, sizes) {
	case gtid.FileHeld:
		return nil
	case gtid.FilePurged:
		return fmt.Errorf("%w: the source has purged binlogs the checkpoint needs (%s, where its position %s lies): %s", ErrPurged, p.File, p, r.purgedRemedy())
	}
	return fmt.Errorf("%w: the checkpoint's position %s is not in the source's binlog (%d files listed): is this the source the copy started from? point csmh-sync at it, or start over",
		ErrDiverged, p, len(files))
}

// sourcePosition is what the source has written: its executed GTIDs, or in file mode its current binlog
// file and offset.
func (r *Replicator) sourcePosition(ctx context.Context, file bool) (*gtid.Set, error) {
	if file {
		name, off, err := dbconn.CurrentBinlogPos(ctx, r.src)
		if err != nil {
			return nil, err
		}
		return gtid.Parse(r.cfg.Flavor, gtid.FilePos{File: name, Pos: off}.String())
	}
	es, err := dbconn.ExecutedGTID(ctx, r.src, dbconn.Flavor(r.cfg.Flavor))
	if err != nil {
		return nil, err
	}
	return gtid.Parse(r.cfg.Flavor, es)
}

// probe refreshes the gauges that need a query or a clock, until ctx ends. Failures only leave gauges stale:
// the stream itself reports connection trouble.
func (r *Replicator) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	var lastIDs time.Time
	for {
		r.probeStream(ctx)
		if time.Since(lastIDs) >= idProbeEvery {
			r.probeIDs(ctx)
			lastIDs = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeStream sets transactions behind, lag, checkpoint age and binlog retention headroom.
func (r *Replicator) probeStream(ctx context.Context) {
	r.m.Lag.Set(r.Lag().Seconds())
	pos := r.Position()
	if pos == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	executed, err := r.sourcePosition(pctx, pos.IsFile()) // in file mode, "behind" counts bytes
	if err != nil {
		return
	}
	r.checkNotAhead(pos, executed)
	behind := pos.Behind(executed)
	r.m.TxBehind.Set(float64(max(behind, 0)))
	r.mu.Lock()
	advancedAt, lastEvent := r.advancedAt, r.lastEvent
	r.mu.Unlock()
	// The checkpoint is only "old" when the source has written something newer than it.
	age := time.Duration(0)
	if behind > 0 {
		age = time.Since(advancedAt)
	}
	r.m.CheckpointAge.Set(age.Seconds())
	ret, _, err := dbconn.BinlogRetention(pctx, r.src)
	if err != nil {
		return
	}
	if ret == 0 {
		r.m.RetentionHeadroom.Set(math.Inf(1))
		return
	}
	// The binlog holding the checkpoint was written around the last applied transaction's commit; caught up,
	// the next needed event is the source's next write, which has the whole retention ahead of it.
	ref := lastEvent
	switch {
	case behind == 0:
		ref = time.Now()
	case ref.IsZero():
		// Nothing applied yet, ever: the position was captured when the checkpoint was first written, which
		// is no earlier than when this process last advanced it.
		ref = advancedAt
	}
	r.m.RetentionHeadroom.Set(float64(ret) - time.Since(ref).Seconds())
}

// checkNotAhead stops the stream when the source's current position (its binlog file and offset, or its
// executed GTIDs) is behind the stream's committed one, read before it, so the source cannot have moved on in
// between: the stream has applied what the source no longer has. RESET MASTER does it on a live source. By
// file position it writes binlog.000001 again from offset 4: the dump thread waits at the old offset, silent
// until the new file grows past it, and the stream would seem caught up all the while. By GTID the source
// hands out the same GTIDs again, which the position would count as applied. Seen twice in a row, a second
// apart, it ends the session with ErrDiverged, as the start check would at the next connection.
func (r *Replicator) checkNotAhead(pos, source *gtid.Set) {
	if source.Contains(pos) {
		r.behind = 0
		return
	}
	if r.behind++; r.behind < 2 {
		return
	}
	err := fmt.Errorf("%w: the source's binlog position %s is behind the stream's %s: its binlogs were reset (RESET MASTER) or replaced, or the source address now leads to another server: start over (docs/runbook.md, \"Recover from a purged binlog\")",
		ErrDiverged, source, pos)
	r.abortMu.Lock()
	if r.abort != nil {
		r.abort(err)
	}
	r.abortMu.Unlock()
}

// probeIDs sets how much of the source's id space is used and the runway to the app's ids in the target.
func (r *Replicator) probeIDs(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, ai, err := table.Status(pctx, r.src, r.cfg.SourceTable)
	if err != nil || ai == 0 {
		return
	}
	r.m.SourceIDUsed.Set(float64(ai) / math.MaxInt32)
	if b := r.boundary.Load(); b > 0 {
		r.m.IDRunway.Set(float64(b) - float64(ai))
	}
}
