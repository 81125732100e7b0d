package replication

// Parallel apply. One batch's row changes are dealt to n lanes by id block (ids/laneBlock mod n), each
// lane's share applied in its own target transaction on its own connection, in source order within the
// lane. Changes to one id always land in the same lane, so per-id order — all the target's primary key
// needs — is kept; changes to different ids commute (a target with another unique key is applied in one
// lane only, see newApplier).
//
// Exactly once, the way MySQL's multi-threaded replica does it: lane 0 saves the stream position
// (csmh_sync_state) and commits LAST, after every other lane committed; each other lane saves its own
// position (csmh_sync_lanes) in its own transaction. A crash between the commits leaves some lanes ahead
// of the position. The next session starts from the position and, for each lane ahead, skips that lane's
// share of the transactions its row already holds, dealing ids with the mapping (lanes, block) those rows
// were written with until the position has passed them. Nothing is applied twice, nothing skipped.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
)

const (
	// MaxApplyLanes bounds Config.ApplyLanes.
	MaxApplyLanes = 16
	// DefaultApplyLanes: two measured best on a 2-core target (docs/benchmarks.md); four were slower there.
	DefaultApplyLanes = 2
	// laneBlock: ids are dealt to lanes in blocks of this many consecutive ids, so each lane inserts into
	// its own pages of the primary key instead of all lanes contending for the last one.
	laneBlock = 256
	// laneMinRows: a batch with fewer rows goes to the target in a single transaction; splitting it would
	// only add commits.
	laneMinRows = 512
	// laneRetries: a lane's transaction that lost a deadlock to another lane is retried this many times.
	laneRetries = 3
)

// lanesAhead is what the lane rows ahead of the stream position say: lane l has applied its share of every
// transaction in pos[l] (nil: nothing beyond the stream position).
type lanesAhead struct {
	lanes, block int
	pos          []*gtid.Set
}

// loadLanes reads the lane checkpoint at the start of a session that streams from pos.
func (a *applier) loadLanes(ctx context.Context, pos *gtid.Set) error {
	a.ahead = nil
	rows, err := a.r.store.Lanes(ctx)
	if err != nil {
		return err
	}
	for _, l := range rows {
		g, err := gtid.Parse(a.r.cfg.Flavor, l.GTID)
		if err != nil {
			return fmt.Errorf("%w: apply lane %d position: %v", checkpoint.ErrMismatch, l.Lane, err)
		}
		if !g.Contains(pos) || pos.Contains(g) {
			continue // at or behind the stream position: nothing of it to skip
		}
		if l.Lanes < 2 || l.Lanes > MaxApplyLanes || l.Lane < 1 || l.Lane >= l.Lanes || l.Block < 1 {
			return fmt.Errorf("%w: apply lane row %+v is not valid", checkpoint.ErrMismatch, l)
		}
		if a.ahead == nil {
			a.ahead = &lanesAhead{lanes: l.Lanes, block: l.Block, pos: make([]*gtid.Set, l.Lanes)}
		} else if a.ahead.lanes != l.Lanes || a.ahead.block != l.Block {
			return fmt.Errorf("%w: apply lanes ahead of the position disagree on the lane count", checkpoint.ErrMismatch)
		}
		a.ahead.pos[l.Lane] = g
	}
	if a.ahead != nil {
		a.r.log.Info("resuming a parallel apply cut short: lanes ahead of the position skip what they applied",
			"from", pos.String(), "lanes", a.ahead.lanes)
	}
	return nil
}

// split deals the batch's row changes to lanes, keeping each id's changes in source order, and leaves out
// the changes a lane ahead of the position applied already.
func (a *applier) split(b *batch) ([][]op, int, int, error) {
	k, block := a.r.cfg.ApplyLanes, laneBlock
	if a.deleteInsert || b.rows < laneMinRows {
		k = 1
	}
	if a.ahead != nil {
		k, block = a.ahead.lanes, a.ahead.block
	}
	parts := make([][]op, k)
	for _, t := range b.txs {
		var one *gtid.Set
		for _, o := range t.ops {
			l := 0
			if k > 1 {
				l = int(o.id / uint64(block) % uint64(k))
			}
			if a.ahead != nil && a.ahead.pos[l] != nil {
				if one == nil {
					var err error
					if one, err = gtid.Parse(a.r.cfg.Flavor, t.position()); err != nil {
						return nil, 0, 0, fmt.Errorf("%w: %v", ErrUnsupported, err)
					}
				}
				if a.ahead.pos[l].Contains(one) {
					continue
				}
			}
			parts[l] = append(parts[l], o)
		}
	}
	return parts, k, block, nil
}

// commitLanes applies lanes 1…k-1 and lane 0 concurrently and commits lane 0 — the one saving the stream
// position — only after every other lane committed. A lane that fails leaves lane 0 uncommitted.
func (a *applier) commitLanes(ctx context.Context, b *batch, parts [][]op, k, block int, lane0 func(*sql.Tx) error) error {
	for l := 1; l < k; l++ {
		if len(parts[l]) > 0 && a.ahead != nil && a.ahead.pos[l] != nil && !b.pos.Contains(a.ahead.pos[l]) {
			// Cannot happen with one ordered stream: the lane's new rows come after everything it applied.
			return fmt.Errorf("%w: apply lane %d would move back from %s to %s", checkpoint.ErrMismatch, l, a.ahead.pos[l], b.pos)
		}
	}
	hooks := a.r.cfg.Hooks
	var wg sync.WaitGroup
	errs := make([]error, k)
	for l := 1; l < k; l++ {
		if len(parts[l]) == 0 {
			continue
		}
		wg.Go(func() {
			if hooks.BeforeLaneApply != nil {
				hooks.BeforeLaneApply(l)
			}
			errs[l] = a.inTx(ctx, func(tx *sql.Tx) error {
				if err := a.applyOps(ctx, tx, parts[l]); err != nil {
					return fmt.Errorf("apply to target (lane %d, batch ending at %s): %w", l, b.pos, err)
				}
				if hooks.LaneApplied != nil {
					hooks.LaneApplied(l)
				}
				return a.r.store.SaveLane(ctx, tx, a.epoch, checkpoint.Lane{Lane: l, Lanes: k, Block: block, GTID: b.pos.String()})
			}, nil)
		})
	}
	wait := func() error {
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if h := hooks.BeforePositionCommit; h != nil {
			return h(k)
		}
		return nil
	}
	first := lane0
	if k > 1 {
		first = func(tx *sql.Tx) error {
			if hooks.BeforeLaneApply != nil {
				hooks.BeforeLaneApply(0)
			}
			if err := lane0(tx); err != nil {
				return err
			}
			if hooks.LaneApplied != nil {
				hooks.LaneApplied(0)
			}
			return nil
		}
	}
	if err := a.inTx(ctx, first, wait); err != nil {
		wg.Wait() // never return while a lane still runs
		return err
	}
	a.passedAhead(b.pos)
	return nil
}

// passedAhead forgets the lanes-ahead state once the stream position has caught up with every lane.
func (a *applier) passedAhead(pos *gtid.Set) {
	if a.ahead == nil {
		return
	}
	for _, p := range a.ahead.pos {
		if p != nil && !pos.Contains(p) {
			return
		}
	}
	a.ahead = nil
}

// notAhead returns t's ops less those a lane ahead of the position applied already: the ops of a
// transaction applied whole (in parts, applier.applyLarge) that a parallel apply cut short had dealt to a
// lane that committed.
func (a *applier) notAhead(t *txn) ([]op, error) {
	if a.ahead == nil {
		return t.ops, nil
	}
	one, err := gtid.Parse(a.r.cfg.Flavor, t.position())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	k, block := a.ahead.lanes, a.ahead.block
	out := t.ops[:0:0]
	for _, o := range t.ops {
		l := int(o.id / uint64(block) % uint64(k))
		if a.ahead.pos[l] != nil && a.ahead.pos[l].Contains(one) {
			continue
		}
		out = append(out, o)
	}
	return out, nil
}

// inTx runs f in a target transaction, then (if set) waits for before, and commits only if both succeeded.
// A transaction that lost a deadlock or timed out on a lock — to a backfill chunk, or to another lane on
// the boundary of their id blocks — is run again; a failure of before (another lane's) is not retried here.
//
// Apply transactions run under READ COMMITTED: they change rows by primary key only, and without gap locks
// two lanes never wait on each other. Under REPEATABLE READ a lane deleting an id the target does not hold
// (a row the backfill has not reached) locks the gap around it, and another lane inserting into that gap
// would wait for lane 0's commit, which waits for that lane: a wait no deadlock detector sees.
func (a *applier) inTx(ctx context.Context, f func(*sql.Tx) error, before func() error) error {
	for attempt := 1; ; attempt++ {
		waited, err := a.tryTx(ctx, f, before)
		if err == nil || waited || attempt == laneRetries || !lockConflict(err) {
			return err
		}
		a.r.log.Debug("apply lane lost a lock conflict; retrying", "err", err, "attempt", attempt)
	}
}

// tryTx is one attempt of inTx; waited reports that the error came from before.
func (a *applier) tryTx(ctx context.Context, f func(*sql.Tx) error, before func() error) (waited bool, err error) {
	tx, err := a.r.dst.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return false, fmt.Errorf("apply to target: begin: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return false, err
	}
	if before != nil {
		if err := before(); err != nil {
			return true, err
		}
	}
	if err := dbconn.Commit(ctx, tx); err != nil {
		return false, fmt.Errorf("apply to target: commit: %w", err)
	}
	return false, nil
}

// lockConflict: 1213 deadlock (the transaction was rolled back), 1205 lock wait timeout.
func lockConflict(err error) bool {
	return dbconn.ServerError(err, 1213, 1205)
}
