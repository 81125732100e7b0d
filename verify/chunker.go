package verify

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/csmh-sync/csmh-sync/table"
)

// chunk is one unit of comparison: an inclusive id range and its ledger row, if it has one.
type chunk struct {
	lo, hi uint64
	led    *ledgerRow
	est    float64 // the optimizer's estimate of its source rows, when planned from one (0 otherwise)
}

// planner produces the chunk map of [lo, hi] lazily, so the first chunks are compared while later ones are
// still being planned and memory does not grow with the table. Ranges the ledger already covers keep the
// ledger's boundaries (what makes incremental runs possible); the gaps are cut from the source primary
// key's index dives into chunks of about ChunkRows rows.
type planner struct {
	r      *run
	lo, hi uint64

	span uint64 // ids per chunk where the rows last had the density walk planned for (walk's goroutine only)

	mu       sync.Mutex
	planned  int
	cursor   uint64 // every id below is planned
	done     bool
	estRows  float64 // the compared chunks' estimates (observe)
	seenRows float64 // and the source rows they held
}

// snap widens [lo, hi] to whole ledger chunks, so a run over a different range (new rows at the top, an
// explicit start or end) does not cut existing chunks in two. A chunk that would cross the boundary is
// dropped from the ledger instead.
func (p *planner) snap(ctx context.Context, limit uint64) error {
	led := p.r.led
	if led == nil {
		return nil
	}
	if row, err := led.atOrBelow(ctx, p.lo); err != nil {
		return err
	} else if row != nil && row.start < p.lo && row.end >= p.lo {
		p.lo = row.start
	}
	row, err := led.atOrBelow(ctx, p.hi)
	if err != nil {
		return err
	}
	if row != nil && row.end > p.hi {
		if row.end <= limit {
			p.hi = row.end
		} else if err := led.drop(ctx, row.start); err != nil {
			return err
		}
	}
	return nil
}

// run sends the chunks of [lo, hi] in id order and closes out.
func (p *planner) run(ctx context.Context, out chan<- chunk) error {
	defer close(out)
	emit := func(c chunk) error {
		select {
		case out <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		p.planned++
		p.cursor = c.hi + 1
		p.mu.Unlock()
		return nil
	}
	cursor := p.lo
	if led := p.r.led; led != nil {
		const pageRows = 1000
		for from := p.lo; from <= p.hi; {
			rows, err := led.page(ctx, from, p.hi, pageRows)
			if err != nil {
				return err
			}
			for i := range rows {
				row := &rows[i]
				if row.start < cursor || row.end > p.hi || row.end < row.start {
					// Overlaps what is already planned or leaves the range: not part of a clean chunk map.
					if err := led.drop(ctx, row.start); err != nil {
						return err
					}
					continue
				}
				if row.start > cursor {
					if err := p.walk(ctx, cursor, row.start-1, emit); err != nil {
						return err
					}
				}
				if err := emit(chunk{lo: row.start, hi: row.end, led: row}); err != nil {
					return err
				}
				cursor = row.end + 1
			}
			if len(rows) < pageRows || rows[len(rows)-1].start == math.MaxUint64 {
				break
			}
			from = rows[len(rows)-1].start + 1
		}
	}
	if cursor <= p.hi && cursor >= p.lo {
		if err := p.walk(ctx, cursor, p.hi, emit); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
	return nil
}

// walk cuts [a, b] into chunks of about ChunkRows source rows. A chunk's end comes from the optimizer's
// estimate of the rows in an id span (index dives: table.EstimateRows), scaled by what the chunks compared so
// far held against their estimates, not from reading the rows: a walk of the primary key to each chunk's
// ChunkRows-th id read the source's rows once more before the chunk's checksum read them again, about a
// quarter of a CRC32 pass over the same rows. The span starts at ChunkRows ids (ids are unique, so it cannot hold more rows) and
// follows the estimates from chunk to chunk, growing at most 16-fold per dive, so a sparse range is crossed
// in a few dives. The boundaries only need to be fixed, not exact: the ledger keeps them for later runs.
func (p *planner) walk(ctx context.Context, a, b uint64, emit func(chunk) error) error {
	want := float64(p.r.v.cfg.ChunkRows)
	if p.span == 0 {
		p.span = uint64(p.r.v.cfg.ChunkRows)
	}
	for {
		if b-a < p.span { // the rest fits: one chunk
			return emit(chunk{lo: a, hi: b})
		}
		span := p.span
		var raw float64 // the optimizer's estimate of the rows of rawSpan ids from a
		var rawSpan uint64
		for range maxDives {
			var n int64
			err := retry(ctx, p.r.v.log, func() error {
				var err error
				n, err = table.EstimateRows(ctx, p.r.src.db, p.r.v.cfg.SourceTable, a, a+span-1)
				return err
			})
			if err != nil {
				return fmt.Errorf("plan chunks from %s: %w", p.r.src.table, err)
			}
			raw, rawSpan = float64(n), span
			est := raw * p.factor()
			// The span that holds ChunkRows rows at this density: where the next chunk starts looking.
			p.span = spanOf(float64(span)*want/max(est, 1), span, want, b-a)
			if (est >= want/2 && est <= want*2) || p.span == span {
				break
			}
			span = p.span
		}
		if rawSpan != span {
			raw = 0 // the last dive was of another span: no estimate to learn from
		}
		if b-a < span {
			return emit(chunk{lo: a, hi: b, est: raw})
		}
		if err := emit(chunk{lo: a, hi: a + span - 1, est: raw}); err != nil {
			return err
		}
		a += span
	}
}

// spanOf is a span of about ids ids: at most 16 times the last span, never below ChunkRows ids (they may
// hold fewer rows, never more) and never past the rest of the range (rest+1 ids).
func spanOf(ids float64, last uint64, want float64, rest uint64) uint64 {
	ids = max(min(ids, float64(last)*16), want)
	if ids >= float64(rest) {
		return max(rest+1, rest) // the rest; a range of every uint64 keeps its last id for a last chunk
	}
	return uint64(ids)
}

// maxDives bounds the estimates per chunk.
const maxDives = 6

// factor scales the optimizer's estimates by what the compared chunks held: their rows over their estimates
// (1 until a chunk with an estimate is compared).
func (p *planner) factor() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.estRows <= 0 || p.seenRows <= 0 {
		return 1
	}
	return min(max(p.seenRows/p.estRows, 1.0/16), 16)
}

// observe records a compared chunk's source rows beside its estimate.
func (p *planner) observe(c chunk, rows int64) {
	if c.est <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.estRows += c.est
	p.seenRows += float64(rows)
}

// total estimates the number of chunks: exact once planning is done, extrapolated from the id density of
// the chunks planned so far before.
func (p *planner) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.planned == 0 || p.cursor <= p.lo {
		return p.planned
	}
	covered := float64(p.cursor - p.lo)
	left := float64(p.hi-p.cursor) + 1
	return p.planned + int(math.Ceil(left*float64(p.planned)/covered))
}
