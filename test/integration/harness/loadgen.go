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
	Conns                                    int     // concurrent connections; default 4
	InsertWeight, UpdateWeight, DeleteWeight float64 // default 0.8 / 0.15 / 0.05
	// UpdateRecentOnly makes updates hit rows this generator inserted moments ago, as the app updates a
	// history row written earlier in the same request. Otherwise updates, like deletes, hit any id.
	UpdateRecentOnly bool
	MinID            int64 // lowest id eligible for update/delete (default 1)
	MaxOps           int64 // stop after this many operations (0 = until ctx ends)
	Seed             int64
	// OnInsert, if set, is called after each insert commits, from the connection's goroutine (concurrently
	// across connections), with the new id and the time the commit returned.
	OnInsert func(id int64, at time.Time)
}

// LoadStats count what the load did: rows inserted, update statements, rows deleted, failed statements.
type LoadStats struct{ Inserts, Updates, Deletes, Errors int64 }

// LoadGen writes single-row autocommit statements like the edX app: inserts with auto-increment ids, and
// updates and deletes of random existing rows anywhere in [MinID, max(id)], so some hit rows a concurrent
// backfill has not reached yet and some hit rows it is copying.
type LoadGen struct {
	db                         *sql.DB
	o                          LoadOptions
	ins, upd, del, errs, total atomic.Int64
	lastErr                    atomic.Value // errBox

	recentMu sync.Mutex
	recent   []int64 // ring of the last recentCap inserted ids
	recentAt int
}

const (
	recentCap        = 256
	statementTimeout = time.Minute // above innodb_lock_wait_timeout (50 s), so a lock wait fails with the server's own error
)

// NewLoadGen validates o and fills in defaults.
func NewLoadGen(db *sql.DB, o LoadOptions) (*LoadGen, error) {
	if db == nil || o.Table == "" || o.RowsPerSecond <= 0 {
		return nil, errors.New("harness: load generator needs a db, a Table and RowsPerSecond > 0")
	}
	if o.InsertWeight < 0 || o.UpdateWeight < 0 || o.DeleteWeight < 0 {
		return nil, errors.New("harness: load generator weights must not be negative")
	}
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.InsertWeight+o.UpdateWeight+o.DeleteWeight == 0 {
		o.InsertWeight, o.UpdateWeight, o.DeleteWeight = 0.8, 0.15, 0.05
	}
	o.MinID = max(o.MinID, 1)
	return &LoadGen{db: db, o: o}, nil
}

// Stats returns the counters so far. It is safe to call while Run runs.
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

// Run writes at RowsPerSecond across Conns connections until ctx ends or MaxOps operations have been
// issued, and returns once every statement in flight has finished on the server. Statement errors are
// counted (Stats, LastError), not returned; cancellation returns nil.
//
// Statements run under their own timeout, not under ctx: cancelling a statement only closes the client's
// connection, and the server may still commit it afterwards, so a caller that counts rows once Run has
// returned would race with it. Letting each statement finish keeps Stats exact.
func (g *LoadGen) Run(ctx context.Context) error {
	ticks := make(chan struct{}, g.o.Conns)
	base := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for w := range g.o.Conns {
		wg.Go(func() {
			r := rand.New(rand.NewSource(g.o.Seed + int64(w)*7919))
			for range ticks {
				sctx, cancel := context.WithTimeout(base, statementTimeout)
				err := g.one(sctx, r)
				cancel()
				if err != nil {
					g.errs.Add(1)
					g.lastErr.Store(errBox{err})
				}
			}
		})
	}
	defer func() { close(ticks); wg.Wait() }()

	interval := time.Duration(float64(time.Second) / g.o.RowsPerSecond)
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		if g.o.MaxOps > 0 && g.total.Load() >= g.o.MaxOps {
			return nil
		}
		// A schedule that fell behind (a stalled server, say) catches up by at most one second's worth of
		// operations, not with an unbounded burst.
		now := time.Now()
		if next.Before(now.Add(-time.Second)) {
			next = now.Add(-time.Second)
		}
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
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
		return g.insert(ctx, r)
	case w < g.o.InsertWeight+g.o.UpdateWeight:
		var id int64
		if g.o.UpdateRecentOnly {
			id = g.recentID(r)
		}
		if id == 0 {
			var err error
			if id, err = g.pick(ctx, r); err != nil || id == 0 {
				return err
			}
		}
		row := NewRow(r, id)
		if _, err := g.db.ExecContext(ctx, "UPDATE "+g.o.Table+" SET state = ?, grade = ?, max_grade = ?, version = ? WHERE id = ?",
			row.State, row.Grade, row.MaxGrade, row.Version, id); err != nil {
			return fmt.Errorf("harness: load update id %d: %w", id, err)
		}
		g.upd.Add(1)
	default:
		id, err := g.pick(ctx, r)
		if err != nil || id == 0 {
			return err
		}
		res, err := g.db.ExecContext(ctx, "DELETE FROM "+g.o.Table+" WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("harness: load delete id %d: %w", id, err)
		}
		// Two connections can pick the same id; only the one that removed the row counts it.
		if n, err := res.RowsAffected(); err == nil && n > 0 {
			g.del.Add(n)
		}
	}
	return nil
}

// insert writes one row the way the app does: no id, created = now.
func (g *LoadGen) insert(ctx context.Context, r *rand.Rand) error {
	row := NewRow(r, 0)
	created := time.Now().UTC().Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000")
	res, err := g.db.ExecContext(ctx, "INSERT INTO "+g.o.Table+" (version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?)",
		row.Version, created, row.State, row.Grade, row.MaxGrade, row.StudentModuleID)
	if err != nil {
		return fmt.Errorf("harness: load insert: %w", err)
	}
	at := time.Now()
	g.ins.Add(1)
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("harness: load insert id: %w", err)
	}
	g.remember(id)
	if g.o.OnInsert != nil {
		g.o.OnInsert(id, at)
	}
	return nil
}

func (g *LoadGen) remember(id int64) {
	g.recentMu.Lock()
	defer g.recentMu.Unlock()
	if len(g.recent) < recentCap {
		g.recent = append(g.recent, id)
		return
	}
	g.recent[g.recentAt] = id
	g.recentAt = (g.recentAt + 1) % recentCap
}

// recentID returns one of the last inserted ids, or 0 if there are none yet.
func (g *LoadGen) recentID(r *rand.Rand) int64 {
	g.recentMu.Lock()
	defer g.recentMu.Unlock()
	if len(g.recent) == 0 {
		return 0
	}
	return g.recent[r.Intn(len(g.recent))]
}

// pick returns the first existing id at or after a random point in [MinID, max(id)], found by two
// primary-key lookups; 0 if there is none.
func (g *LoadGen) pick(ctx context.Context, r *rand.Rand) (int64, error) {
	var maxID sql.NullInt64
	if err := g.db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+g.o.Table).Scan(&maxID); err != nil {
		return 0, fmt.Errorf("harness: load max id: %w", err)
	}
	if !maxID.Valid || maxID.Int64 < g.o.MinID {
		return 0, nil
	}
	at := g.o.MinID + r.Int63n(maxID.Int64-g.o.MinID+1)
	var id int64
	err := g.db.QueryRowContext(ctx, "SELECT id FROM "+g.o.Table+" WHERE id >= ? ORDER BY id LIMIT 1", at).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("harness: load pick id: %w", err)
	}
	return id, nil
}

// errBox gives every stored error the same concrete type, as atomic.Value requires.
type errBox struct{ err error }
