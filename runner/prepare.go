package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
)

// ErrResume means the checkpoint cannot be resumed against this source.
var ErrResume = errors.New("cannot resume")

// prepared is everything a migration command needs once the servers and the checkpoint agree.
type prepared struct {
	info     dbconn.ServerInfo
	flavor   string
	src, dst *table.Table
	store    *checkpoint.Store
	state    *checkpoint.State
	pos      *gtid.Set
	mode     string // PositionGTID or PositionFile: how the stream follows the source
}

// prepare validates both tables, creates or loads the checkpoint and checks that the source can still serve
// the checkpoint's position (purged ⊆ checkpoint ⊆ executed). On a first start it captures the source's GTID
// position BEFORE any backfill read, which is what makes the backfill/stream race safe. A refusal that is the
// stream's stop found before it runs wraps replication.ErrPurged or ErrDiverged (startStreamStop).
// startID is --start-id (0: none); adoptExisting is --adopt-existing-rows.
func prepare(ctx context.Context, log *slog.Logger, c *Common, k *conns, startID uint64, adoptExisting bool) (*prepared, error) {
	p := &prepared{}
	var err error
	if p.info, err = dbconn.Inspect(ctx, k.src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	p.flavor = string(p.info.Version.Flavor)
	if !p.info.LogBin || p.info.BinlogFormat != "ROW" || (p.info.BinlogRowImage != "" && p.info.BinlogRowImage != "FULL") {
		return nil, fmt.Errorf("source binlog is not usable (log_bin=%v, binlog_format=%s, binlog_row_image=%s): run 'csmh-sync preflight' and fix what it reports",
			p.info.LogBin, p.info.BinlogFormat, p.info.BinlogRowImage)
	}
	if err := dbconn.CheckBinlogCompression(ctx, k.src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if p.src, err = table.Load(ctx, k.src, c.SourceTable); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if p.dst, err = table.Load(ctx, k.dst, c.TargetTable); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for _, t := range []*table.Table{p.src, p.dst} {
		if err := t.CheckKey(); err != nil {
			return nil, err
		}
	}
	if errs, _ := table.Compare(p.src, p.dst); len(errs) > 0 {
		return nil, fmt.Errorf("%s: run 'csmh-sync preflight' for the full list", errs[0])
	}
	p.store = checkpoint.New(k.dst, c.TargetTable.Schema)
	st, err := p.store.Load(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrNone):
		if err := p.store.Ensure(ctx); err != nil {
			return nil, err
		}
		if p.mode, err = firstMode(c.Position, p.info); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		start, err := startPosition(ctx, k.src, p.info, p.mode)
		if err != nil {
			return nil, err
		}
		boundary, err := idBoundary(ctx, k.src, k.dst, p.src, p.dst)
		if err != nil {
			return nil, err
		}
		if err := checkCopyRangeEmpty(ctx, k.dst, c.TargetTable, startID, boundary, adoptExisting, log); err != nil {
			return nil, err
		}
		first := checkpoint.State{SourceTable: c.SourceTable.String(), TargetTable: c.TargetTable.String(),
			Flavor: p.flavor, SourceServer: identity(p.mode, p.info), GTID: start, IDBoundary: boundary}
		if st, err = p.store.Init(ctx, first); err != nil {
			return nil, err
		}
		log.Info("first start: stream position captured before the backfill", "gtid", st.GTID, "id_boundary", st.IDBoundary)
	case err != nil:
		return nil, err
	default:
		if err := p.store.Ensure(ctx); err != nil { // a newer release may add tables
			return nil, err
		}
		if st.SourceTable != c.SourceTable.String() || st.TargetTable != c.TargetTable.String() || st.Flavor != p.flavor {
			return nil, fmt.Errorf("%w: the checkpoint in %s migrates %s (%s) → %s; this run asks for %s (%s) → %s: use the same tables and source",
				checkpoint.ErrMismatch, c.TargetTable.Schema, st.SourceTable, st.Flavor, st.TargetTable, c.SourceTable, p.flavor, c.TargetTable)
		}
		if p.mode, err = resumeMode(c.Position, st, p.info, c.TargetTable.Schema); err != nil {
			return nil, err
		}
		if err := checkIdentity(log, st, p.info, p.mode); err != nil {
			return nil, err
		}
		log.Info("resuming from checkpoint", "gtid", st.GTID, "applied_transactions", st.Applied.Transactions)
	}
	p.state = st
	// On every start: a target whose AUTO_INCREMENT fell below the boundary (a MySQL 5.7 restart) would give
	// the app ids of the copied range. The daemon checks again every autoIncEvery (watchAutoIncrement).
	if _, _, err := p.store.CheckAutoIncrement(ctx, c.TargetTable); err != nil {
		return nil, err
	}
	if p.pos, err = gtid.Parse(p.flavor, st.GTID); err != nil {
		return nil, fmt.Errorf("%w: checkpoint position: %v", ErrResume, err)
	}
	if p.pos.Tagged() {
		return nil, fmt.Errorf("%w: the checkpoint's position (%s) holds %s", ErrResume, p.pos, gtid.TaggedUnsupported)
	}
	if err := checkResumable(ctx, k.src, p.info.Version.Flavor, p.pos); err != nil {
		return nil, err
	}
	return p, nil
}

// checkResumable enforces purged ⊆ checkpoint ⊆ executed. Its refusals are the stream's stops found before
// the stream runs: they wrap replication.ErrDiverged and replication.ErrPurged as the running stream's own
// check does, so they are recorded and classified alike.
func checkResumable(ctx context.Context, db *sql.DB, f dbconn.Flavor, pos *gtid.Set) error {
	if pos.IsFile() {
		return checkFileResumable(ctx, db, pos)
	}
	execStr, err := dbconn.ExecutedGTID(ctx, db, f)
	if err != nil {
		return err
	}
	executed, err := gtid.Parse(string(f), execStr)
	if err != nil {
		return err
	}
	if !executed.Contains(pos) {
		return fmt.Errorf("%w: %w: the checkpoint (%s) holds transactions the source never executed (%s): this is another server or a restored backup; point --source-dsn at the right server, or start over (docs/runbook.md, \"Recover from a purged binlog\")",
			ErrResume, replication.ErrDiverged, pos, executed)
	}
	purgedStr, err := dbconn.PurgedGTID(ctx, db, f)
	if err != nil {
		return err
	}
	purged, err := gtid.Parse(string(f), purgedStr)
	if err != nil {
		return err
	}
	if !pos.Contains(purged) {
		return fmt.Errorf("%w: %w: the source has purged binlogs the checkpoint needs (checkpoint %s, purged %s): the missing changes cannot be replayed; start over (docs/runbook.md, \"Recover from a purged binlog\": drop the csmh_sync_* tables in the target schema, delete the target's rows below the id boundary and keep the app's), and raise binlog retention",
			ErrResume, replication.ErrPurged, pos, purged)
	}
	return nil
}

func sourceIdentity(si dbconn.ServerInfo) string {
	if si.ServerUUID != "" {
		return si.ServerUUID
	}
	return "server_id=" + strconv.FormatUint(uint64(si.ServerID), 10)
}

// checkCopyRangeEmpty refuses a first start on a target that already holds rows in the range to copy (from
// --start-id to below the id boundary): rows an earlier copy left (the old INSERT … SELECT loop, or a
// migration started over without emptying the range). The backfill never overwrites a row, so such rows would
// stay as they are, stale if the source changed them since, and a row deleted from the source since would
// stay too. With adopt the start goes on, and verify --repair corrects those rows once the backfill is done.
func checkCopyRangeEmpty(ctx context.Context, dst *sql.DB, t table.Name, startID, boundary uint64, adopt bool, log *slog.Logger) error {
	var id uint64
	err := dst.QueryRowContext(ctx, "SELECT id FROM "+t.Quoted()+" WHERE id >= ? AND id < ? ORDER BY id LIMIT 1", startID, boundary).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the target's copied range: %w", err)
	}
	if adopt {
		log.Warn("the target already holds rows below the id boundary; keeping them (--adopt-existing-rows): run 'csmh-sync verify --repair' once the backfill is done",
			"first_id", id, "id_boundary", boundary)
		return nil
	}
	return fmt.Errorf("%w: %s already holds rows below the id boundary %d (id %d) and there is no checkpoint: an earlier copy left them, and the backfill never overwrites a row, so stale ones would stay; delete them (docs/runbook.md, \"Recover from a purged binlog\", step 4), or pass --adopt-existing-rows and run 'csmh-sync verify --repair' after the backfill",
		ErrUsage, t, boundary, id)
}

// idBoundary is the first id the app may write to the target: the smallest target id above the source's max,
// or else the target's AUTO_INCREMENT. Copied ids must stay below it.
func idBoundary(ctx context.Context, src, dst *sql.DB, st, tt *table.Table) (uint64, error) {
	var srcMax sql.NullInt64
	if err := src.QueryRowContext(ctx, "SELECT MAX(id) FROM "+st.Name.Quoted()).Scan(&srcMax); err != nil {
		return 0, fmt.Errorf("read source max id: %w", err)
	}
	srcNext := max(st.AutoIncrement, uint64(srcMax.Int64)+1)
	boundary := tt.AutoIncrement
	var appMin sql.NullInt64
	if err := dst.QueryRowContext(ctx, "SELECT MIN(id) FROM "+tt.Name.Quoted()+" WHERE id > ?", srcMax.Int64).Scan(&appMin); err != nil {
		return 0, fmt.Errorf("read target ids: %w", err)
	}
	if appMin.Valid && uint64(appMin.Int64) < boundary {
		boundary = uint64(appMin.Int64)
	}
	if boundary <= srcNext {
		return 0, fmt.Errorf("the target's first app id %d is not above the source's next id %d: raise the target AUTO_INCREMENT (ALTER TABLE %s AUTO_INCREMENT = %d); see 'csmh-sync preflight'",
			boundary, srcNext, tt.Name, srcNext+10000)
	}
	return boundary, nil
}
