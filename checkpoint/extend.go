package checkpoint

import (
	"context"
	"fmt"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// ExtendPlan adds segments to an existing plan (ranges a first start with --start-id/--end-id left out), in one
// transaction, and returns the whole plan. A segment number already taken fails the whole extension.
func (s *Store) ExtendPlan(ctx context.Context, add []Segment) ([]Segment, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	for _, g := range add {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+s.fill+` (segment, start_id, end_id, next_id, rows_copied, done, updated_at)
			VALUES (?, ?, ?, ?, 0, ?, ?)`, g.ID, g.Start, g.End, g.Next, g.Done, now); err != nil {
			return nil, fmt.Errorf("extend backfill plan: %w", err)
		}
	}
	if err := dbconn.Commit(ctx, tx); err != nil {
		return nil, fmt.Errorf("extend backfill plan: %w", err)
	}
	return s.segments(ctx)
}

// Span is the lowest start and highest end of the plan's segments; ok is false when they hold no id (an empty
// source at the first start). Splitting a segment between workers keeps it; ExtendPlan widens it.
func Span(segs []Segment) (lo, hi uint64, ok bool) {
	for _, g := range segs {
		if g.End < g.Start {
			continue
		}
		if !ok || g.Start < lo {
			lo = g.Start
		}
		if !ok || g.End > hi {
			hi = g.End
		}
		ok = true
	}
	return lo, hi, ok
}
