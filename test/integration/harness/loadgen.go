package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"
)

// LoadOptions shape the live write load.
type LoadOptions struct {
	Table                                    string // database.table
	RowsPerSecond                            float64
	Conns                                    int     // default 4
	InsertWeight, UpdateWeight, DeleteWeight float64 // default 0.8 / 0.15 / 0.05
	MinID                                    int64   // lowest id eligible for update/delete
	MaxOps                                   int64   // stop after this many operations (0 = until ctx ends)
	Seed                                     int64
	OnInsert                                 func(id int64, at time.Time)
}

// LoadStats count what the load did.
type LoadStats struct{ Inserts, Updates, Deletes, Errors int64 }

// LoadGen writes single-row autocommit statements like the edX app: inserts with auto-increment ids, and
// updates and deletes of random existing rows anywhere in [MinID, max], so some hit rows a concurrent backfill
// has not reached yet and some hit rows it is copying.
type LoadGen struct {
	db                         *sql.DB
	o                          LoadOptions
	ins, upd, del, errs, total atomic.Int64
	lastErr                    atomic.Value
}

// NewLoadGen validates the options.
func NewLoadGen(db *sql.DB, o LoadOptions) (*LoadGen, error) {
	if o.Table == "" || o.RowsPerSecond <= 0 {
		return nil, errors.New("loadgen: Table and RowsPerSecond are required")
	}
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.InsertWeight+o.UpdateWeight+o.DeleteWeight == 0 {
		o.InsertWeight, o.UpdateWeight, o.DeleteWeight = 0.8, 0.15, 0.05
	}
	return &LoadGen{db: db, o: o}, nil
}

// Stats returns the counters so far.
func (g *LoadGen) Stats() LoadStats {
	return LoadStats{Inserts: g.ins.Load(), Updates: g.upd.Load(), Deletes: g.del.Load(), Errors: g.errs.Load()}
}

// LastError is the most recent statement error, if any.
func (g *LoadGen) LastError() error {
	if e, ok := g.lastErr.Load().(errBox); ok {
		return e.err
	}
	return nil
}

// Run writes until ctx ends or MaxOps operations are done. It returns nil on cancellation.
func (g *LoadGen) Run(ctx context.Context) error {
	ticks := make(chan struct{}, g.o.Conns*4)
	var wg sync.WaitGroup
	for w := 0; w < g.o.Conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(g.o.Seed + int64(w)*7919))
			for range ticks {
				if err := g.one(ctx, r); err != nil && ctx.Err() == nil {
					g.errs.Add(1)
					g.lastErr.Store(errBox{err}) // boxed: atomic.Value needs one concrete type
				}
			}
		}(w)
	}
	interval := time.Duration(float64(time.Second) / g.o.RowsPerSecond)
	next := time.Now()
	defer func() { close(ticks); wg.Wait() }()
	for {
		if g.o.MaxOps > 0 && g.total.Load() >= g.o.MaxOps {
			return nil
		}
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case ticks <- struct{}{}:
			g.total.Add(1)
		}
	}
}

func (g *LoadGen) one(ctx context.Context, r *rand.Rand) error {
	w := r.Float64() * (g.o.InsertWeight + g.o.UpdateWeight + g.o.DeleteWeight)
	switch {
	case w < g.o.InsertWeight:
		row := NewRow(r, 0)
		res, err := g.db.ExecContext(ctx, "INSERT INTO "+g.o.Table+" (version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?)",
			row.Version, row.Created.Format("2006-01-02 15:04:05.000000"), row.State, row.Grade, row.MaxGrade, row.StudentModuleID)
		if err != nil {
			return err
		}
		g.ins.Add(1)
		if g.o.OnInsert != nil {
			id, _ := res.LastInsertId()
			g.o.OnInsert(id, time.Now())
		}
		return nil
	case w < g.o.InsertWeight+g.o.UpdateWeight:
		id, err := g.pick(ctx, r)
		if err != nil || id == 0 {
			return err
		}
		row := NewRow(r, id)
		if _, err := g.db.ExecContext(ctx, "UPDATE "+g.o.Table+" SET state = ?, grade = ?, version = ? WHERE id = ?",
			row.State, row.Grade, row.Version, id); err != nil {
			return err
		}
		g.upd.Add(1)
	default:
		id, err := g.pick(ctx, r)
		if err != nil || id == 0 {
			return err
		}
		if _, err := g.db.ExecContext(ctx, "DELETE FROM "+g.o.Table+" WHERE id = ?", id); err != nil {
			return err
		}
		g.del.Add(1)
	}
	return nil
}

// pick returns an existing id at or after a random point in [MinID, max(id)], by a primary-key lookup.
func (g *LoadGen) pick(ctx context.Context, r *rand.Rand) (int64, error) {
	var maxID sql.NullInt64
	if err := g.db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+g.o.Table).Scan(&maxID); err != nil {
		return 0, err
	}
	lo := max(g.o.MinID, 1)
	if !maxID.Valid || maxID.Int64 < lo {
		return 0, nil
	}
	at := lo + r.Int63n(maxID.Int64-lo+1)
	var id int64
	err := g.db.QueryRowContext(ctx, "SELECT id FROM "+g.o.Table+" WHERE id >= ? ORDER BY id LIMIT 1", at).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pick id: %w", err)
	}
	return id, nil
}

// errBox gives every stored error the same concrete type.
type errBox struct{ err error }
