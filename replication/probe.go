package replication

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
)

// checkPurged refuses to stream from a position whose binlogs the source no longer has.
func (r *Replicator) checkPurged(ctx context.Context, pos *gtid.Set) error {
	s, err := dbconn.PurgedGTID(ctx, r.src, dbconn.Flavor(r.cfg.Flavor))
	if err != nil {
		return err
	}
	purged, err := gtid.Parse(r.cfg.Flavor, s)
	if err != nil {
		return err
	}
	if !pos.Contains(purged) {
		return fmt.Errorf("%w: the checkpoint %s needs binlogs the source purged (purged up to %s): start over — drop the csmh_sync_* tables in the target schema and empty the target's copied range — then run again, and raise binlog retention",
			ErrPurged, pos, purged)
	}
	return nil
}

// probe refreshes the gauges that need a query: transactions behind, checkpoint age, binlog retention headroom,
// the source's id usage and the runway to app-written ids.
func (r *Replicator) probe(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		r.probeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Replicator) probeOnce(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f := dbconn.Flavor(r.cfg.Flavor)
	pos := r.Position()
	if s, err := dbconn.ExecutedGTID(pctx, r.src, f); err == nil && pos != nil {
		if exec, err := gtid.Parse(r.cfg.Flavor, s); err == nil {
			behind := pos.Behind(exec)
			r.m.TxBehind.Set(float64(behind))
			r.mu.Lock()
			age := time.Since(r.advanced)
			last := r.lastEvent
			r.mu.Unlock()
			if behind == 0 {
				age = 0
			}
			r.m.CheckpointAge.Set(age.Seconds())
			if behind == 0 && time.Since(time.Unix(0, r.lastContact.Load())) < 2*r.cfg.Heartbeat+time.Second {
				r.lagNanos.Store(0)
				r.m.Lag.Set(0)
			}
			if ret, err := dbconn.BinlogRetention(pctx, r.src); err == nil {
				if ret == 0 {
					r.m.RetentionHeadroom.Set(math.Inf(1))
				} else {
					ref := last
					if ref.IsZero() || behind == 0 {
						ref = time.Now()
					}
					r.m.RetentionHeadroom.Set(float64(ret) - time.Since(ref).Seconds())
				}
			}
		}
	}
	var ai sql.NullInt64
	err := r.src.QueryRowContext(pctx, "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
		r.cfg.SourceTable.Schema, r.cfg.SourceTable.Table).Scan(&ai)
	if err == nil && ai.Valid {
		r.m.SourceIDUsed.Set(float64(ai.Int64) / math.MaxInt32)
		if r.cfg.IDBoundary > 0 {
			r.m.IDRunway.Set(float64(int64(r.cfg.IDBoundary) - ai.Int64))
		}
	}
}
