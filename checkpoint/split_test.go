package checkpoint_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/csmh-sync/csmh-sync/checkpoint"
)

// startSegment starts a store (startStore) holding one backfill segment, [1, 1000] from 1, and returns it.
func startSegment(t *testing.T) (*sql.DB, *checkpoint.Store, checkpoint.Segment) {
	t.Helper()
	db, store := startStore(t)
	segs, err := store.PlanSegments(context.Background(), []checkpoint.Segment{{ID: 0, Start: 1, End: 1000, Next: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return db, store, segs[0]
}

// A split gives the ids from its point up to a new segment while nothing at or above the point is committed for
// the segment it cuts; a split exactly at the segment's next id leaves that segment done, and one below it is
// refused (the caller reads the checkpoint again and chooses another point).
func TestSplitSegment(t *testing.T) {
	ctx := context.Background()
	db, store, seg := startSegment(t)
	copied := seg
	copied.Next, copied.Rows = 501, 500 // a chunk committed ids 1–500
	if err := store.SaveSegment(ctx, db, 0, seg, copied); err != nil {
		t.Fatal(err)
	}

	if _, err := store.SplitSegment(ctx, 0, copied, 400, 1); !errors.Is(err, checkpoint.ErrSegmentMoved) {
		t.Fatalf("split at 400, below the next id 501: %v, want ErrSegmentMoved", err)
	}
	upper, err := store.SplitSegment(ctx, 0, copied, 801, 1)
	if err != nil {
		t.Fatal(err)
	}
	if upper.Start != 801 || upper.End != 1000 || upper.Next != 801 || upper.Done {
		t.Fatalf("split at 801: new segment %+v, want [801, 1000] from 801", upper)
	}
	copied.End = 800
	if _, err := store.SplitSegment(ctx, 0, copied, 501, 2); err != nil {
		t.Fatalf("split at the next id 501: %v", err)
	}

	got, err := store.PlanSegments(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int][4]uint64{0: {1, 500, 501, 1}, 1: {801, 1000, 801, 0}, 2: {501, 800, 501, 0}} // start, end, next, done
	if len(got) != len(want) {
		t.Fatalf("segments %+v, want %d", got, len(want))
	}
	for _, g := range got {
		done := uint64(0)
		if g.Done {
			done = 1
		}
		if w := want[g.ID]; [4]uint64{g.Start, g.End, g.Next, done} != w {
			t.Errorf("segment %d: start, end, next, done = %d, %d, %d, %d; want %v", g.ID, g.Start, g.End, g.Next, done, w)
		}
	}
}

// A chunk planned before a split and wholly below its point commits its progress: the segment's end it was
// planned with is stale, but the chunk still lies within the segment. One that reaches past the new end is
// refused, and a chunk that ends exactly at the new end leaves the segment done.
func TestSaveSegmentAfterSplit(t *testing.T) {
	ctx := context.Background()
	db, store, seg := startSegment(t)
	planned := seg // End 1000: what the busy worker's chunks were planned from
	if _, err := store.SplitSegment(ctx, 0, planned, 601, 1); err != nil {
		t.Fatal(err)
	}

	below := planned
	below.Next, below.Rows = 501, 500 // ids 1–500, below the split point
	if err := store.SaveSegment(ctx, db, 0, planned, below); err != nil {
		t.Fatalf("chunk 1–500 after a split at 601: %v", err)
	}
	past := below
	past.Next, past.Rows = 651, 650 // ids 501–650 reach into the new segment
	if err := store.SaveSegment(ctx, db, 0, below, past); !errors.Is(err, checkpoint.ErrSegmentMoved) {
		t.Fatalf("chunk 501–650 past the split at 601: %v, want ErrSegmentMoved", err)
	}
	last := below
	last.Next, last.Rows = 601, 600 // ids 501–600 end at the new end
	if err := store.SaveSegment(ctx, db, 0, below, last); err != nil {
		t.Fatalf("chunk 501–600 up to the split at 601: %v", err)
	}

	got, err := store.PlanSegments(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range got {
		if g.ID == 0 && (g.End != 600 || g.Next != 601 || g.Rows != 600 || !g.Done) {
			t.Errorf("segment 0 %+v, want [1, 600] done at 601 with 600 rows", g)
		}
		if g.ID == 1 && (g.Start != 601 || g.End != 1000 || g.Next != 601 || g.Done) {
			t.Errorf("segment 1 %+v, want [601, 1000] from 601", g)
		}
	}
	if len(got) != 2 {
		t.Fatalf("segments %+v, want 2", got)
	}
}
