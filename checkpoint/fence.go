package checkpoint

import (
	"context"
	"errors"
	"sync/atomic"
)

// ErrFenced means a checkpoint write was refused because this process no longer owns the checkpoint (its
// migration lock was lost), or re-took the lock after the writer had loaded the state it is about to save: the
// writer must load the checkpoint again — another process may have advanced it meanwhile — and retry.
var ErrFenced = errors.New("checkpoint writer does not hold the migration lock")

// ErrSegmentMoved means a backfill segment's committed state is no longer the one its writer loaded: a
// commit of another process (one that died with its commit in flight) moved it. The writer must reload the
// segment and retry from there.
var ErrSegmentMoved = errors.New("backfill segment moved since it was loaded")

// Fence proves, inside the transaction of a checkpoint write, that the writer may still write. The runner's
// migration lock implements it: the lock's holder connection must be the one this process took, and it must
// not have been taken again since epoch.
type Fence interface {
	// Epoch counts the times the lock was taken; a writer reads it before it loads the state it will save.
	Epoch() uint64
	// Check fails with ErrFenced unless the lock is held now, in the same epoch.
	Check(ctx context.Context, tx Execer, epoch uint64) error
}

// SetFence makes every later checkpoint write check f in its transaction. Without a fence (library use,
// tests of one package) writes are not checked.
func (s *Store) SetFence(f Fence) { s.fence.Store(&f) }

// Epoch is the fence's current epoch (0 without a fence). Read it before loading the state to be saved and
// pass it to the Save call.
func (s *Store) Epoch() uint64 {
	if f := s.fence.Load(); f != nil {
		return (*f).Epoch()
	}
	return 0
}

func (s *Store) check(ctx context.Context, tx Execer, epoch uint64) error {
	if f := s.fence.Load(); f != nil {
		return (*f).Check(ctx, tx, epoch)
	}
	return nil
}

type fenceBox = atomic.Pointer[Fence]
