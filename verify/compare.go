package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sync/errgroup"
)

const (
	// sinkBatch is how many differing ids are confirmed (and repaired) together.
	sinkBatch = 500
	// windowDiffs bounds the differences rows mode collects before it closes its cursors and hands them on;
	// the comparison resumes after the last id compared.
	windowDiffs = 5000
)

// errStop ends a merge early; it never leaves this package.
var errStop = errors.New("stop")

// outcome is what one chunk comparison found.
type outcome struct {
	src, dst sums
	found    int64 // differing ids confirmed (count mode: 1 when the chunk differs)
}

// check compares one chunk, or skips it when the ledger vouches for it, and records the outcome. It returns
// the source rows compared (0 when skipped).
func (r *run) check(ctx context.Context, c chunk) (srcRows int64, err error) {
	mode := r.v.cfg.Mode
	var touches uint64
	if r.led != nil {
		// Read before the chunk: a replicated change that commits after this read changes the sum, so the
		// ledger row written below can never hide it.
		err := retry(ctx, r.v.log, func() error {
			var err error
			touches, err = r.led.touchSum(ctx, c.lo, c.hi)
			return err
		})
		if err != nil {
			return 0, err
		}
		if r.v.cfg.Incremental && c.led.vouches(mode, r.scope, touches) {
			r.col.skipped(c.led.srcN)
			return 0, nil
		}
	}
	var o outcome
	switch mode {
	case ModeCount:
		o, err = r.checkCount(ctx, c)
	case ModeChecksum:
		o, err = r.checkChecksum(ctx, c)
	default:
		o, err = r.checkRows(ctx, c)
	}
	if err != nil {
		return 0, fmt.Errorf("chunk %d..%d: %w", c.lo, c.hi, err)
	}
	r.col.checked(o.src.n)
	result := "equal"
	if o.found > 0 {
		result = "different"
	}
	r.v.m.VerifyChunks.WithLabelValues(result).Inc()
	if r.led == nil {
		return o.src.n, nil
	}
	// A repaired chunk is recorded as not equal: only a later comparison of the whole chunk vouches for it.
	row := ledgerRow{start: c.lo, end: c.hi, mode: mode, equal: o.found == 0, srcN: o.src.n, dstN: o.dst.n,
		scope: r.scope, touches: touches}
	if mode == ModeChecksum {
		row.checksum = fmt.Sprintf("%016x", o.src.h)
	}
	return o.src.n, retry(ctx, r.v.log, func() error { return r.led.save(ctx, row) })
}

// catchUp waits for replication, if there is any to wait for.
func (r *run) catchUp(ctx context.Context) (bool, error) {
	if r.v.cfg.CatchUp == nil {
		return false, nil
	}
	if err := r.v.cfg.CatchUp(ctx); err != nil {
		return false, fmt.Errorf("wait for the target to apply the source's changes before reporting a difference: %w", err)
	}
	return true, nil
}

func (r *run) checkCount(ctx context.Context, c chunk) (outcome, error) {
	s, d, err := r.sums(ctx, c.lo, c.hi)
	if err != nil {
		return outcome{}, err
	}
	if s != d {
		if waited, err := r.catchUp(ctx); err != nil {
			return outcome{}, err
		} else if waited {
			if s, d, err = r.sums(ctx, c.lo, c.hi); err != nil {
				return outcome{}, err
			}
		}
	}
	o := outcome{src: s, dst: d}
	if s != d {
		o.found = 1
		r.v.log.Warn("chunk differs", "start_id", c.lo, "end_id", c.hi, "source_rows", s.n, "target_rows", d.n)
		r.col.differentChunk(Range{Start: c.lo, End: c.hi, SourceCount: s.n, TargetCount: d.n}, true)
	}
	return o, nil
}

func (r *run) checkChecksum(ctx context.Context, c chunk) (outcome, error) {
	s, d, err := r.sums(ctx, c.lo, c.hi)
	if err != nil {
		return outcome{}, err
	}
	if s != d {
		if waited, err := r.catchUp(ctx); err != nil {
			return outcome{}, err
		} else if waited {
			if s, d, err = r.sums(ctx, c.lo, c.hi); err != nil {
				return outcome{}, err
			}
		}
	}
	o := outcome{src: s, dst: d}
	if s == d {
		return o, nil
	}
	sk := &sink{r: r}
	if err := bisect(ctx, r, c.lo, c.hi, s, d, func(ds []diff) error { return sk.add(ctx, ds) }); err != nil {
		return o, err
	}
	if err := sk.flush(ctx); err != nil {
		return o, err
	}
	o.found = sk.found
	if o.found > 0 {
		r.v.log.Warn("chunk differs", "start_id", c.lo, "end_id", c.hi, "source_rows", s.n, "target_rows", d.n, "ids", sk.found)
		r.col.differentChunk(Range{Start: c.lo, End: c.hi, SourceCount: s.n, TargetCount: d.n}, false)
	}
	return o, nil
}

// checkRows streams both sides of the chunk in id order and compares every row. Differences are handed
// on in windows so that memory stays bounded and no cursor stays open while they are confirmed.
func (r *run) checkRows(ctx context.Context, c chunk) (outcome, error) {
	sk := &sink{r: r, rows: true}
	var o outcome
	for from := c.lo; ; {
		var window []diff
		var last uint64
		var sn, dn int64
		stopped := false
		err := retry(ctx, r.v.log, func() error {
			window, stopped = window[:0], false
			var err error
			last, sn, dn, err = r.mergeRange(ctx, true, between, []any{from, c.hi}, func(d diff) error {
				window = append(window, d)
				if len(window) >= windowDiffs {
					return errStop
				}
				return nil
			})
			if errors.Is(err, errStop) {
				stopped, err = true, nil
			}
			return err
		})
		if err != nil {
			return o, err
		}
		o.src.n += sn
		o.dst.n += dn
		if err := sk.add(ctx, window); err != nil {
			return o, err
		}
		if !stopped || last >= c.hi {
			break
		}
		from = last + 1
	}
	if err := sk.flush(ctx); err != nil {
		return o, err
	}
	o.found = sk.found
	if o.found > 0 {
		r.v.log.Warn("chunk differs", "start_id", c.lo, "end_id", c.hi, "ids", sk.found)
		r.col.differentChunk(Range{Start: c.lo, End: c.hi, SourceCount: o.src.n, TargetCount: o.dst.n}, false)
	}
	return o, nil
}

var _ rangeSummer = (*run)(nil)

// sums aggregates [lo, hi] on both servers at once: a count, plus the hash XOR in checksum mode.
func (r *run) sums(ctx context.Context, lo, hi uint64) (src, dst sums, err error) {
	count := r.v.cfg.Mode == ModeCount
	one := func(ctx context.Context, s *side, out *sums) error {
		if count {
			return s.db.QueryRowContext(ctx, s.countSQL(), lo, hi).Scan(&out.n)
		}
		return s.db.QueryRowContext(ctx, s.checksumSQL(), lo, hi).Scan(&out.n, &out.h, &out.q1, &out.q2)
	}
	err = retry(ctx, r.v.log, func() error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return one(gctx, r.src, &src) })
		g.Go(func() error { return one(gctx, r.dst, &dst) })
		return g.Wait()
	})
	if err != nil {
		return sums{}, sums{}, fmt.Errorf("checksum ids %d..%d: %w", lo, hi, err)
	}
	return src, dst, nil
}

// leaf lists the row hashes of a small range on both sides and merges them.
func (r *run) leaf(ctx context.Context, lo, hi uint64) ([]diff, error) {
	var out []diff
	err := retry(ctx, r.v.log, func() error {
		out = out[:0]
		_, _, _, err := r.mergeRange(ctx, false, between, []any{lo, hi}, func(d diff) error {
			out = append(out, d)
			return nil
		})
		return err
	})
	return out, err
}

// diffIDs compares exactly these rows again (ids sorted ascending), by full values or by row hash.
func (r *run) diffIDs(ctx context.Context, ids []uint64, full bool) ([]diff, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	list := " IN (" + inList(ids) + ")"
	in := func(id string) string { return id + list }
	var out []diff
	err := retry(ctx, r.v.log, func() error {
		out = out[:0]
		_, _, _, err := r.mergeRange(ctx, full, in, nil, func(d diff) error {
			out = append(out, d)
			return nil
		})
		return err
	})
	return out, err
}

// between is the id range condition of the chunk queries.
func between(id string) string { return id + " BETWEEN ? AND ?" }

// mergeRange runs the same id-ordered listing on both sides and merges the streams. where builds the
// condition from a side's quoted id column.
func (r *run) mergeRange(ctx context.Context, full bool, where func(id string) string, args []any, emit func(diff) error) (last uint64, srcN, dstN int64, err error) {
	open := func(s *side) (*rowsCursor, func(), error) {
		w := where(s.id)
		q := s.hashRowsSQL(w)
		if full {
			q = s.fullRowsSQL(w)
		}
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, nil, fmt.Errorf("list %s rows: %w", s.role, err)
		}
		c, err := newRowsCursor(rows)
		if err != nil {
			rows.Close()
			return nil, nil, err
		}
		return c, func() { rows.Close() }, nil
	}
	sc, sclose, err := open(r.src)
	if err != nil {
		return 0, 0, 0, err
	}
	defer sclose()
	dc, dclose, err := open(r.dst)
	if err != nil {
		return 0, 0, 0, err
	}
	defer dclose()
	last, err = merge(sc, dc, emit)
	return last, sc.count, dc.count, err
}

// sink confirms and records the differing ids of one chunk, and repairs them if asked, in batches.
type sink struct {
	r      *run
	rows   bool // compare full rows (rows mode) rather than row hashes
	batch  []diff
	found  int64
	waited bool // caught up once for this chunk already
}

func (s *sink) add(ctx context.Context, ds []diff) error {
	for _, d := range ds {
		s.batch = append(s.batch, d)
		if len(s.batch) >= sinkBatch {
			if err := s.flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush confirms the batch by comparing its ids again after a catch-up (a change still in flight through
// replication is not a difference), records what remains, and repairs it when asked. The catch-up happens
// once per chunk: each one waits for the replication lag, and a badly different chunk has many batches.
func (s *sink) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	ds := s.batch
	defer func() { s.batch = s.batch[:0] }()
	if s.r.v.cfg.CatchUp != nil {
		if !s.waited {
			if _, err := s.r.catchUp(ctx); err != nil {
				return err
			}
			s.waited = true
		}
		var err error
		if ds, err = s.r.diffIDs(ctx, idsOf(ds), s.rows); err != nil {
			return err
		}
	}
	if len(ds) == 0 {
		return nil
	}
	s.found += int64(len(ds))
	s.r.col.diffs(ds)
	for i, d := range ds {
		if i == 5 {
			break
		}
		s.r.v.log.Warn("row differs", "id", d.id, "kind", d.kind.String())
	}
	if !s.r.v.cfg.Repair {
		s.r.col.settle(int64(len(ds)), 0)
		return nil
	}
	ids := idsOf(ds)
	if err := s.r.repair(ctx, ids); err != nil {
		return err
	}
	still, err := s.r.diffIDs(ctx, ids, s.rows)
	if err != nil {
		return err
	}
	s.r.col.settle(int64(len(still)), len(ds)-len(still))
	if len(still) > 0 {
		s.r.v.log.Warn("rows still differ after repair", "ids", len(still), "first", strconv.FormatUint(still[0].id, 10))
	}
	return nil
}

func idsOf(ds []diff) []uint64 {
	ids := make([]uint64, len(ds))
	for i, d := range ds {
		ids[i] = d.id
	}
	return ids
}
