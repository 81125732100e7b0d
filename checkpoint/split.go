package checkpoint

import (
	"context"
	"fmt"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// SplitSegment gives the ids from at to the end of segment from to a new segment newID, in one target
// transaction: from's end becomes at-1 and the new segment [at, from.End] starts with nothing copied. An idle
// worker calls it to take over half of a busy worker's remaining rows.
//
// The update is a compare-and-set, like SaveSegment's: it applies only while from's end is unchanged and its
// next id is at most at, i.e. nothing at or above at has been committed for it; at its next id exactly, from is
// done. The busy worker's SaveSegment checks the chunk against the committed end, so a chunk of its own that it
// planned before the split and that reaches into the new segment fails with ErrSegmentMoved and is read again
// within the shortened range, while one wholly below the point commits as planned: every id stays in exactly
// one segment, and each segment's next id still means "everything below it is copied". It returns the new
// segment, or ErrSegmentMoved when from moved first (the caller reloads and chooses again).
func (s *Store) SplitSegment(ctx context.Context, epoch uint64, from Segment, at uint64, newID int) (Segment, error) {
	if at <= from.Start || at > from.End {
		return Segment{}, fmt.Errorf("split backfill segment %d [%d, %d] at %d: outside the segment", from.ID, from.Start, from.End, at)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Segment{}, fmt.Errorf("split backfill segment: %w", err)
	}
	defer tx.Rollback()
	if err := s.check(ctx, tx, epoch); err != nil {
		return Segment{}, err
	}
	now := time.Now().UTC()
	res, err := tx.ExecContext(ctx, `UPDATE `+s.fill+` SET end_id = ?, done = (next_id = ?), updated_at = ?
		WHERE segment = ? AND end_id = ? AND done = 0 AND next_id <= ?`, at-1, at, now, from.ID, from.End, at)
	if err != nil {
		return Segment{}, fmt.Errorf("split backfill segment: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return Segment{}, fmt.Errorf("split backfill segment: %w", err)
	} else if n != 1 {
		return Segment{}, fmt.Errorf("%w: segment %d has copied past id %d or ends elsewhere than %d", ErrSegmentMoved, from.ID, at, from.End)
	}
	to := Segment{ID: newID, Start: at, End: from.End, Next: at, UpdatedAt: now}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+s.fill+` (segment, start_id, end_id, next_id, rows_copied, done, updated_at)
		VALUES (?, ?, ?, ?, 0, 0, ?)`, to.ID, to.Start, to.End, to.Next, now); err != nil {
		return Segment{}, fmt.Errorf("split backfill segment: %w", err)
	}
	if err := dbconn.Commit(ctx, tx); err != nil {
		return Segment{}, fmt.Errorf("split backfill segment: %w", err)
	}
	return to, nil
}
