package verify

import "context"

// sums is one side's aggregate over an id range.
type sums struct {
	n      int64  // rows
	h      uint64 // XOR of the rows' 64-bit hashes (0 in count mode)
	q1, q2 string // the CRC digest's sums of squares (decimal; "0" otherwise)
}

// rangeSummer is what the drill-down needs: aggregates of both sides over a range, and a row-by-row
// comparison of a range small enough to list.
type rangeSummer interface {
	sums(ctx context.Context, lo, hi uint64) (src, dst sums, err error)
	// leaf compares the rows of [lo, hi] one by one and returns the differing ids in id order.
	leaf(ctx context.Context, lo, hi uint64) ([]diff, error)
}

// leafRows is the size below which a differing range is listed row by row instead of split further:
// listing 200 short hash rows per side costs about what two more checksum queries would.
const leafRows = 200

// oneSidedLeafRows bounds the listing of a range that only one side has rows in.
const oneSidedLeafRows = 20_000

// bisect narrows a differing range [lo, hi], whose aggregates are s and d, down to the differing ids by
// splitting it in halves by id and comparing the halves' aggregates; ranges of at most leafRows rows on
// both sides are compared row by row. It needs O(depth) memory: the ids of one leaf at a time are passed
// to emit. Splitting by id value (not by row count) keeps the recursion at most 64 levels deep whatever
// the id gaps are.
func bisect(ctx context.Context, rs rangeSummer, lo, hi uint64, s, d sums, emit func([]diff) error) error {
	if s == d {
		return nil
	}
	// A range one side has no rows in is listed at once (up to a bound: the list is held in memory):
	// splitting it further could only find that every row differs.
	if max(s.n, d.n) <= leafRows || lo == hi || min(s.n, d.n) == 0 && max(s.n, d.n) <= oneSidedLeafRows {
		ds, err := rs.leaf(ctx, lo, hi)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			return nil
		}
		return emit(ds)
	}
	mid := lo + (hi-lo)/2
	// Both halves are queried: deriving the second from the first (n - n1, h ^ h1) would mix aggregates
	// taken at different moments of a table that replication keeps changing.
	for _, r := range [2][2]uint64{{lo, mid}, {mid + 1, hi}} {
		if err := ctx.Err(); err != nil {
			return err
		}
		s2, d2, err := rs.sums(ctx, r[0], r[1])
		if err != nil {
			return err
		}
		if err := bisect(ctx, rs, r[0], r[1], s2, d2, emit); err != nil {
			return err
		}
	}
	return nil
}
