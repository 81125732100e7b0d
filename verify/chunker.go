package verify

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
)

// chunk is one unit of comparison: an inclusive id range and its ledger row, if it has one.
type chunk struct {
	lo, hi uint64
	led    *ledgerRow
}

// planner produces the chunk map of [lo, hi] lazily, so the first chunks are compared while later ones are
// still being planned and memory does not grow with the table. Ranges the ledger already covers keep the
// ledger's boundaries (what makes incremental runs possible); the gaps are cut from the source primary
// key into chunks of about ChunkRows rows.
type planner struct {
	r      *run
	lo, hi uint64

	mu      sync.Mutex
	planned int
	cursor  uint64 // every id below is planned
	done    bool
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

// walk cuts [a, b] into chunks of ChunkRows source rows: each chunk ends at the ChunkRows-th source id at
// or after its start, found by an index range scan of the primary key; the last one ends at b, so rows the
// target has where the source has none are inside a chunk too.
func (p *planner) walk(ctx context.Context, a, b uint64, emit func(chunk) error) error {
	s := p.r.src
	q := "SELECT " + s.id + " FROM " + s.table + " WHERE " + s.id + " BETWEEN ? AND ? ORDER BY " + s.id +
		" LIMIT 1 OFFSET " + strconv.Itoa(p.r.v.cfg.ChunkRows-1)
	for {
		var end uint64
		found := false
		err := retry(ctx, p.r.v.log, func() error {
			err := s.db.QueryRowContext(ctx, q, a, b).Scan(&end)
			if errors.Is(err, sql.ErrNoRows) {
				return nil // fewer than ChunkRows rows left: the rest is one chunk
			}
			found = err == nil
			return err
		})
		if err != nil {
			return fmt.Errorf("plan chunks from %s: %w", s.table, err)
		}
		if !found || end >= b {
			return emit(chunk{lo: a, hi: b})
		}
		if err := emit(chunk{lo: a, hi: end}); err != nil {
			return err
		}
		a = end + 1
	}
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
