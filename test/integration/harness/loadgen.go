package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
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
	// IDChangeWeight: updates that move a row to another id (UPDATE … SET id = new), new being an id this
	// load deleted before, so it is unused and below every id the table has handed out.
	IDChangeWeight float64
	// TxWeight: transactions of 2–6 of the statements above (chosen by their weights), committed together.
	TxWeight float64
	// ExtendedWeight: inserts into ExtendedTable on ExtendedDB, as the app writes new history rows into CSMHE
	// with ENABLE_CSMH_EXTENDED: their ids come from CSMHE's AUTO_INCREMENT, at or above the migration's id
	// boundary. VerifyExtended checks them afterwards.
	ExtendedWeight float64
	ExtendedDB     *sql.DB
	ExtendedTable  string
	// BulkEvery and BulkRows: besides the paced operations, one transaction of BulkRows row changes every
	// BulkEvery, alternately a multi-row insert and an update of BulkRows consecutive rows; large enough
	// (≥ 512) and a stream batch is applied over parallel lanes.
	BulkEvery time.Duration
	BulkRows  int
	// UpdateRecentOnly makes updates hit rows this generator inserted moments ago, as the app updates a
	// history row written earlier in the same request. Otherwise updates, like deletes, hit any id.
	UpdateRecentOnly bool
	MinID            int64 // lowest id eligible for update/delete (default 1)
	MaxOps           int64 // stop after this many operations (0 = until ctx ends)
	Seed             int64
	// OnInsert, if set, is called after each single-row insert into Table commits, from the connection's
	// goroutine (concurrently across connections), with the new id and the time the commit returned.
	OnInsert func(id int64, at time.Time)
}

// LoadStats count what the load did: rows inserted, update statements, rows deleted, rows moved to another id,
// multi-statement transactions and bulk transactions committed, rows inserted into the extended table,
// failed operations. Everything counted has committed.
type LoadStats struct {
	Inserts, Updates, Deletes, IDChanges int64
	Transactions, Bulk, Extended         int64
	Errors                               int64
}

// LoadGen writes like the edX app: single-row autocommit inserts with auto-increment ids, and updates and
// deletes of random existing rows anywhere in [MinID, max(id)], so some hit rows a concurrent backfill has
// not reached yet and some hit rows it is copying; optionally also id changes, multi-statement and bulk
// transactions, and inserts into CSMHE.
type LoadGen struct {
	db                              *sql.DB
	o                               LoadOptions
	ins, upd, del, moved, txs, bulk atomic.Int64
	ext, errs, total                atomic.Int64
	lastErr                         atomic.Value // errBox

	recentMu sync.Mutex
	recent   []int64 // ring of the last recentCap inserted ids
	recentAt int
	free     []int64 // ids this load removed from Table, for id changes

	extMu   sync.Mutex
	extRows []extRow // rows inserted into ExtendedTable
}

// extRow is an insert into the extended table: its id and the values it was given.
type extRow struct {
	id   int64
	args []any // version, created, state, grade, max_grade, student_module_id
}

// effect is what the statements of one transaction did; it counts only once the transaction has committed.
type effect struct {
	ins, upd, del, moved int64
	inserted             []int64
	freed                []int64 // ids that left Table (deleted, or moved from)
	taken                []int64 // free ids given to rows; back to the pool if the transaction fails
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
	if o.InsertWeight < 0 || o.UpdateWeight < 0 || o.DeleteWeight < 0 || o.IDChangeWeight < 0 || o.TxWeight < 0 || o.ExtendedWeight < 0 {
		return nil, errors.New("harness: load generator weights must not be negative")
	}
	if o.ExtendedWeight > 0 && (o.ExtendedDB == nil || o.ExtendedTable == "") {
		return nil, errors.New("harness: load generator inserts into the extended table only with an ExtendedDB and an ExtendedTable")
	}
	if o.BulkEvery < 0 || o.BulkRows < 0 || (o.BulkEvery > 0) != (o.BulkRows > 0) {
		return nil, errors.New("harness: load generator bulk transactions need both BulkEvery and BulkRows")
	}
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.InsertWeight+o.UpdateWeight+o.DeleteWeight+o.IDChangeWeight == 0 {
		o.InsertWeight, o.UpdateWeight, o.DeleteWeight = 0.8, 0.15, 0.05
	}
	o.MinID = max(o.MinID, 1)
	return &LoadGen{db: db, o: o}, nil
}

// Stats returns the counters so far. It is safe to call while Run runs.
func (g *LoadGen) Stats() LoadStats {
	return LoadStats{Inserts: g.ins.Load(), Updates: g.upd.Load(), Deletes: g.del.Load(), IDChanges: g.moved.Load(),
		Transactions: g.txs.Load(), Bulk: g.bulk.Load(), Extended: g.ext.Load(), Errors: g.errs.Load()}
}

// LastError is the most recent statement error, if any.
func (g *LoadGen) LastError() error {
	if e, ok := g.lastErr.Load().(errBox); ok {
		return e.err
	}
	return nil
}

// Run writes at RowsPerSecond across Conns connections (and the bulk transactions on one more) until ctx
// ends or MaxOps paced operations have been issued, and returns once every statement in flight has finished
// on the server. Statement errors are counted (Stats, LastError), not returned; cancellation returns nil.
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
	stop := make(chan struct{})
	if g.o.BulkEvery > 0 {
		wg.Go(func() {
			r := rand.New(rand.NewSource(g.o.Seed - 7919))
			t := time.NewTicker(g.o.BulkEvery)
			defer t.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				sctx, cancel := context.WithTimeout(base, statementTimeout)
				err := g.bulkTx(sctx, r, n%2 == 0)
				cancel()
				if err != nil {
					g.errs.Add(1)
					g.lastErr.Store(errBox{err})
				}
			}
		})
	}
	defer func() { close(stop); close(ticks); wg.Wait() }()

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

// execer is a pool or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (g *LoadGen) one(ctx context.Context, r *rand.Rand) error {
	o := g.o
	w := r.Float64() * (o.InsertWeight + o.UpdateWeight + o.DeleteWeight + o.IDChangeWeight + o.TxWeight + o.ExtendedWeight)
	switch {
	case w < o.TxWeight:
		return g.transaction(ctx, r)
	case w < o.TxWeight+o.ExtendedWeight:
		return g.insertExtended(ctx, r)
	}
	var e effect
	if err := g.statement(ctx, g.db, r, &e); err != nil {
		g.undo(&e)
		return err
	}
	g.commit(&e, time.Now())
	return nil
}

// statement runs one insert, update, delete or id change, chosen by the weights, on x.
func (g *LoadGen) statement(ctx context.Context, x execer, r *rand.Rand, e *effect) error {
	o := g.o
	w := r.Float64() * (o.InsertWeight + o.UpdateWeight + o.DeleteWeight + o.IDChangeWeight)
	switch {
	case w < o.InsertWeight:
		return g.insert(ctx, x, r, e)
	case w < o.InsertWeight+o.UpdateWeight:
		var id int64
		if o.UpdateRecentOnly {
			id = g.recentID(r)
		}
		if id == 0 {
			var err error
			if id, err = g.pick(ctx, x, r); err != nil || id == 0 {
				return err
			}
		}
		row := NewRow(r, id)
		if _, err := x.ExecContext(ctx, "UPDATE "+o.Table+" SET state = ?, grade = ?, max_grade = ?, version = ? WHERE id = ?",
			row.State, row.Grade, row.MaxGrade, row.Version, id); err != nil {
			return fmt.Errorf("harness: load update id %d: %w", id, err)
		}
		e.upd++
	case w < o.InsertWeight+o.UpdateWeight+o.DeleteWeight:
		id, err := g.pick(ctx, x, r)
		if err != nil || id == 0 {
			return err
		}
		res, err := x.ExecContext(ctx, "DELETE FROM "+o.Table+" WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("harness: load delete id %d: %w", id, err)
		}
		// Two connections can pick the same id; only the one that removed the row counts it.
		if n, err := res.RowsAffected(); err == nil && n > 0 {
			e.del += n
			e.freed = append(e.freed, id)
		}
	default:
		return g.changeID(ctx, x, r, e)
	}
	return nil
}

// insert writes one row the way the app does: no id, created = now.
func (g *LoadGen) insert(ctx context.Context, x execer, r *rand.Rand, e *effect) error {
	row := NewRow(r, 0)
	created := time.Now().UTC().Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000")
	res, err := x.ExecContext(ctx, "INSERT INTO "+g.o.Table+" (version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?)",
		row.Version, created, row.State, row.Grade, row.MaxGrade, row.StudentModuleID)
	if err != nil {
		return fmt.Errorf("harness: load insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("harness: load insert id: %w", err)
	}
	e.ins++
	e.inserted = append(e.inserted, id)
	return nil
}

// changeID moves a random row to an id this load freed earlier.
func (g *LoadGen) changeID(ctx context.Context, x execer, r *rand.Rand, e *effect) error {
	to := g.takeFree(r)
	if to == 0 {
		return nil // nothing deleted yet
	}
	from, err := g.pick(ctx, x, r)
	if err != nil || from == 0 {
		g.giveFree(to)
		return err
	}
	res, err := x.ExecContext(ctx, "UPDATE "+g.o.Table+" SET id = ? WHERE id = ?", to, from)
	if err != nil {
		g.giveFree(to)
		return fmt.Errorf("harness: load move id %d to %d: %w", from, to, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		g.giveFree(to) // the row went away meanwhile
		return nil
	}
	e.moved++
	e.taken = append(e.taken, to)
	e.freed = append(e.freed, from)
	return nil
}

// transaction runs 2–6 statements in one transaction.
func (g *LoadGen) transaction(ctx context.Context, r *rand.Rand) error {
	tx, err := g.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("harness: load begin: %w", err)
	}
	var e effect
	for n := 2 + r.Intn(5); n > 0; n-- {
		if err := g.statement(ctx, tx, r, &e); err != nil {
			_ = tx.Rollback()
			g.undo(&e)
			return fmt.Errorf("harness: load transaction: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		g.undo(&e)
		return fmt.Errorf("harness: load commit: %w", err)
	}
	g.commit(&e, time.Now())
	g.txs.Add(1)
	return nil
}

// bulkTx commits one transaction of BulkRows row changes: a multi-row insert, or an update of that many
// consecutive rows from a random id on.
func (g *LoadGen) bulkTx(ctx context.Context, r *rand.Rand, insert bool) error {
	n := g.o.BulkRows
	if insert {
		var sb strings.Builder
		sb.WriteString("INSERT INTO " + g.o.Table + " (version, created, state, grade, max_grade, student_module_id) VALUES ")
		args := make([]any, 0, 6*n)
		created := time.Now().UTC().Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000")
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(?, ?, ?, ?, ?, ?)")
			row := NewRow(r, 0)
			args = append(args, row.Version, created, row.State, row.Grade, row.MaxGrade, row.StudentModuleID)
		}
		if _, err := g.db.ExecContext(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("harness: load bulk insert: %w", err)
		}
		g.ins.Add(int64(n))
		g.bulk.Add(1)
		return nil
	}
	var maxID sql.NullInt64
	if err := g.db.QueryRowContext(ctx, "SELECT MAX(id) FROM "+g.o.Table).Scan(&maxID); err != nil {
		return fmt.Errorf("harness: load max id: %w", err)
	}
	from := g.o.MinID
	if span := maxID.Int64 - g.o.MinID - 2*int64(n); span > 0 {
		from += r.Int63n(span)
	}
	res, err := g.db.ExecContext(ctx, "UPDATE "+g.o.Table+" SET version = ?, grade = ? WHERE id >= ? ORDER BY id LIMIT ?",
		fmt.Sprintf("bulk%016x", r.Uint64()), grades[r.Intn(len(grades))], from, n)
	if err != nil {
		return fmt.Errorf("harness: load bulk update from id %d: %w", from, err)
	}
	g.upd.Add(1)
	if k, err := res.RowsAffected(); err == nil && k >= int64(n) {
		g.bulk.Add(1)
	}
	return nil
}

// insertExtended inserts one row into the extended table the way the app does with ENABLE_CSMH_EXTENDED.
func (g *LoadGen) insertExtended(ctx context.Context, r *rand.Rand) error {
	row := NewRow(r, 0)
	created := time.Now().UTC().Truncate(time.Microsecond).Format("2006-01-02 15:04:05.000000")
	args := []any{row.Version, created, row.State, row.Grade, row.MaxGrade, row.StudentModuleID}
	res, err := g.o.ExtendedDB.ExecContext(ctx, "INSERT INTO "+g.o.ExtendedTable+" (version, created, state, grade, max_grade, student_module_id) VALUES (?, ?, ?, ?, ?, ?)", args...)
	if err != nil {
		return fmt.Errorf("harness: load insert into %s: %w", g.o.ExtendedTable, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("harness: load insert id: %w", err)
	}
	g.extMu.Lock()
	g.extRows = append(g.extRows, extRow{id: id, args: args})
	g.extMu.Unlock()
	g.ext.Add(1)
	return nil
}

// VerifyExtended checks the extended table after the load: every row it inserted is there with the values it
// was given, and no other row has an id at or above from. It returns the rows checked and the lowest id the
// load was given (0 if none).
func (g *LoadGen) VerifyExtended(ctx context.Context, from uint64) (int, int64, error) {
	g.extMu.Lock()
	rows := slices.Clone(g.extRows)
	g.extMu.Unlock()
	var lowest int64
	for _, x := range rows {
		if lowest == 0 || x.id < lowest {
			lowest = x.id
		}
		var n int
		if err := g.o.ExtendedDB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+g.o.ExtendedTable+` WHERE id = ? AND version <=> ?
			AND created = ? AND state <=> ? AND grade <=> ? AND max_grade <=> ? AND student_module_id = ?`, append([]any{x.id}, x.args...)...).Scan(&n); err != nil {
			return 0, 0, fmt.Errorf("harness: read %s id %d: %w", g.o.ExtendedTable, x.id, err)
		}
		if n != 1 {
			return 0, 0, fmt.Errorf("harness: %s id %d, inserted by the app, is gone or changed", g.o.ExtendedTable, x.id)
		}
	}
	var n int
	if err := g.o.ExtendedDB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+g.o.ExtendedTable+" WHERE id >= ?", from).Scan(&n); err != nil {
		return 0, 0, fmt.Errorf("harness: count %s: %w", g.o.ExtendedTable, err)
	}
	if n != len(rows) {
		return 0, 0, fmt.Errorf("harness: %s holds %d rows at or above id %d; the app inserted %d", g.o.ExtendedTable, n, from, len(rows))
	}
	return len(rows), lowest, nil
}

// commit counts a committed transaction's effect.
func (g *LoadGen) commit(e *effect, at time.Time) {
	g.ins.Add(e.ins)
	g.upd.Add(e.upd)
	g.del.Add(e.del)
	g.moved.Add(e.moved)
	g.recentMu.Lock()
	g.free = append(g.free, e.freed...)
	g.recentMu.Unlock()
	for _, id := range e.inserted {
		g.remember(id)
		if g.o.OnInsert != nil {
			g.o.OnInsert(id, at)
		}
	}
}

// undo returns the free ids a failed transaction took.
func (g *LoadGen) undo(e *effect) {
	for _, id := range e.taken {
		g.giveFree(id)
	}
}

// takeFree removes and returns a random freed id, 0 if there is none.
func (g *LoadGen) takeFree(r *rand.Rand) int64 {
	g.recentMu.Lock()
	defer g.recentMu.Unlock()
	if len(g.free) == 0 {
		return 0
	}
	i := r.Intn(len(g.free))
	id := g.free[i]
	g.free[i] = g.free[len(g.free)-1]
	g.free = g.free[:len(g.free)-1]
	return id
}

func (g *LoadGen) giveFree(id int64) {
	g.recentMu.Lock()
	defer g.recentMu.Unlock()
	g.free = append(g.free, id)
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
func (g *LoadGen) pick(ctx context.Context, x execer, r *rand.Rand) (int64, error) {
	var maxID sql.NullInt64
	if err := x.QueryRowContext(ctx, "SELECT MAX(id) FROM "+g.o.Table).Scan(&maxID); err != nil {
		return 0, fmt.Errorf("harness: load max id: %w", err)
	}
	if !maxID.Valid || maxID.Int64 < g.o.MinID {
		return 0, nil
	}
	at := g.o.MinID + r.Int63n(maxID.Int64-g.o.MinID+1)
	var id int64
	err := x.QueryRowContext(ctx, "SELECT id FROM "+g.o.Table+" WHERE id >= ? ORDER BY id LIMIT 1", at).Scan(&id)
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
