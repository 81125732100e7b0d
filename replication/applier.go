package replication

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
	"github.com/csmh-sync/csmh-sync/table"
)

const (
	// stmtBudget bounds one multi-row statement; a single larger row gets a statement of its own.
	stmtBudget = 4 << 20
	// binaryRows is the number of rows in one prepared upsert (7 columns: 1,400 placeholders).
	binaryRows = 200
	// batchBytes bounds the row data one target transaction holds in memory.
	batchBytes = 64 << 20
	// maxDeleteIDs bounds one DELETE … IN list.
	maxDeleteIDs = 5000
	// positionEvery is how long a position-only batch (transactions of other tables) may wait: an idle
	// source table still gets its checkpoint advanced about once a second, never once per transaction.
	positionEvery = time.Second
	// flushTimeout is the default Config.FlushTimeout.
	flushTimeout = 30 * time.Second
)

// batch collects complete source transactions for one target transaction.
type batch struct {
	pos     *gtid.Set // position after the last transaction added
	txs     []*txn    // transactions with row changes
	rows    int
	bytes   int
	count   int       // every transaction added, with or without rows
	markers int       // positions the stream moved to between transactions (file mode)
	opened  time.Time // when the first transaction since the last commit arrived
	rowsAt  time.Time // when the first one with rows arrived
	lastSeq uint64
	lastTS  time.Time
}

func newBatch(pos *gtid.Set) *batch { return &batch{pos: pos.Clone()} }

func (b *batch) add(t *txn) error {
	if !b.pending() {
		b.opened = time.Now()
	}
	if err := b.pos.Add(t.position()); err != nil {
		return err
	}
	if t.marker {
		b.markers++
		return nil
	}
	b.count++
	b.lastSeq, b.lastTS = t.seq, t.commitTS
	if len(t.ops) > 0 {
		if len(b.txs) == 0 {
			b.rowsAt = time.Now()
		}
		b.txs = append(b.txs, t)
		b.rows += len(t.ops)
		b.bytes += t.bytes
	}
	return nil
}

func (b *batch) pending() bool { return b.count > 0 || b.markers > 0 }

// deadline: rows wait at most BatchDelay for company; a position-only batch waits up to positionEvery.
func (b *batch) deadline(delay time.Duration) time.Time {
	d := b.opened.Add(positionEvery)
	if len(b.txs) > 0 {
		if r := b.rowsAt.Add(delay); r.Before(d) {
			d = r
		}
	}
	return d
}

func (b *batch) reset() {
	clear(b.txs) // the applied transactions' rows go with them, not when a later batch overwrites their slots
	b.txs, b.rows, b.bytes, b.count, b.markers = b.txs[:0], 0, 0, 0, 0
}

// applier writes batches to the target: rows and checkpoint in one transaction.
type applier struct {
	r      *Replicator
	target string
	cols   []string // source column names, in op.row order
	intro  []string // charset introducer per column ("" for UTF-8 and non-strings)
	// insertHead and upsertTail frame a multi-row upsert.
	insertHead, upsertTail string
	placeholders           string // "(?,?,…)" for one row
	// deleteInsert: the target has a unique key besides the primary key. ON DUPLICATE KEY UPDATE would then
	// silently update whichever row holds the other key; DELETE by id + plain INSERT fails loudly instead.
	deleteInsert bool
	// binary: upserts go as prepared multi-row statements in the binary protocol, so large values travel as
	// length-prefixed bytes instead of escaped literals the server must parse. Needs UTF-8 columns (binlog
	// values of other charsets need an introducer, which a parameter cannot carry).
	binary bool
	// ahead: lanes a parallel apply cut short left ahead of the stream position (lanes.go); nil normally.
	ahead *lanesAhead
	// epoch is the checkpoint fence epoch read before the session loaded its position.
	epoch uint64
	gate  *byteGate // released as transactions are taken from the queue
	// large is the open target transaction of a source transaction arriving in parts; nil normally.
	large *largeTxn
}

// largeTxn is a source transaction too large to hold whole, being written into one target transaction.
type largeTxn struct {
	gtid   string
	tx     *sql.Tx
	cancel context.CancelFunc
	sum    checkpoint.Counters
	parts  int
}

func newApplier(r *Replicator, src, dst *table.Table) (*applier, error) {
	a := &applier{r: r, target: r.cfg.TargetTable.Quoted(), deleteInsert: len(dst.UniqueKeys) > 0}
	var cols, upd []string
	for _, c := range src.Columns {
		if dst.Column(c.Name) == nil {
			return nil, fmt.Errorf("%w: the target %s has no column %s: run preflight, adapt the target, then start again",
				ErrSchema, dst.Name, c.Name)
		}
		a.cols = append(a.cols, c.Name)
		a.intro = append(a.intro, introducer(c.Charset))
		q := table.QuoteIdent(c.Name)
		cols = append(cols, q)
		if !strings.EqualFold(c.Name, table.IDColumn) {
			upd = append(upd, q+"=VALUES("+q+")")
		}
	}
	a.binary = !a.deleteInsert
	for _, in := range a.intro {
		if in != "" {
			a.binary = false
		}
	}
	a.placeholders = "(" + strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",") + ")"
	a.insertHead = "INSERT INTO " + a.target + " (" + strings.Join(cols, ",") + ") VALUES "
	a.upsertTail = " ON DUPLICATE KEY UPDATE " + strings.Join(upd, ",")
	return a, nil
}

// introducer returns the charset introducer that makes the server read a string literal's bytes in the
// source column's charset. Binlog values are the column's raw bytes; UTF-8 ones are valid as they are on
// our utf8mb4 connection.
func introducer(charset string) string {
	switch strings.ToLower(charset) {
	case "", "utf8", "utf8mb3", "utf8mb4":
		return ""
	}
	return "_" + strings.ToLower(charset)
}

// run consumes transactions until in is closed, committing a batch when it is full or old enough, and the
// rest when in closes; when ctx ends it commits the batch in hand and returns. It returns early only on a
// target error.
func (a *applier) run(ctx context.Context, in <-chan *txn) error {
	b := newBatch(a.r.Position())
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer a.abortLarge() // a transaction whose last part never came is not committed: it is streamed again
	for {
		var due <-chan time.Time
		if b.pending() {
			timer.Reset(max(time.Until(b.deadline(a.r.cfg.BatchDelay)), 0))
			due = timer.C
		}
		select {
		case t, ok := <-in:
			if !ok {
				return a.flush(ctx, b)
			}
			if a.gate != nil {
				a.gate.release(t.bytes)
			}
			if t.partial || a.large != nil {
				if err := a.applyLarge(ctx, b, t); err != nil {
					return err
				}
				continue
			}
			if err := b.add(t); err != nil {
				return fmt.Errorf("%w: %v", ErrUnsupported, err)
			}
			if b.rows >= a.r.cfg.BatchRows || b.bytes >= batchBytes {
				if err := a.flush(ctx, b); err != nil {
					return err
				}
			}
		case <-due:
			if err := a.flush(ctx, b); err != nil {
				return err
			}
		case <-ctx.Done():
			// A stop (SIGTERM) commits the batch in hand and leaves the queued transactions to be streamed
			// again at the next start: draining a full queue behind a slow target could take longer than
			// the stop may.
			return a.flush(ctx, b)
		}
	}
}

// flush applies the batch's transactions and its position in ONE target transaction, or, for a batch
// large enough to split, in one transaction per lane (see lanes.go) with the position in lane 0's, which
// commits last.
func (a *applier) flush(ctx context.Context, b *batch) error {
	if !b.pending() {
		return nil
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.r.cfg.FlushTimeout)
	defer cancel()
	var sum checkpoint.Counters
	for _, t := range b.txs {
		sum.Inserts += t.counts.Inserts
		sum.Updates += t.counts.Updates
		sum.Deletes += t.counts.Deletes
	}
	sum.Transactions = uint64(b.count)
	parts, k, block, err := a.split(b)
	if err != nil {
		return err
	}
	lane0 := func(tx *sql.Tx) error {
		if err := a.applyOps(fctx, tx, parts[0]); err != nil {
			return fmt.Errorf("apply to target (batch ending at %s): %w", b.pos, err)
		}
		if a.r.cfg.Touched != nil {
			// Lane 0 marks every id of the batch, in the transaction that saves the position and commits after
			// every other lane's: a mark is never visible before the rows it covers, so a chunk verify reads
			// after a change's rows committed is read after the change too, or its sum changes later. The ids
			// of lanes that are ahead after a crash are marked too, though their rows committed without a mark.
			ops := make([]op, 0, b.rows)
			for _, t := range b.txs {
				ops = append(ops, t.ops...)
			}
			if err := a.touch(fctx, tx, ops); err != nil {
				return err
			}
		}
		return a.r.store.SaveStream(fctx, tx, a.epoch, checkpoint.StreamProgress{GTID: b.pos.String(), Added: sum, LastEventAt: b.lastTS})
	}
	if err := a.commitLanes(fctx, b, parts, k, block, lane0); err != nil {
		return err
	}
	if h := a.r.cfg.Hooks.AfterPositionCommit; h != nil {
		if err := h(); err != nil {
			return err
		}
	}
	a.r.committed(b.pos, b.lastSeq, b.lastTS)
	a.count(sum)
	b.reset()
	if h := a.r.cfg.Hooks.AfterBatchApplied; h != nil {
		h(b.pos.String())
	}
	return nil
}

// applyLarge writes one part of a source transaction that arrives in parts (streamer.fragment) into a target
// transaction held open from the first part to the last, which also saves the position: the source
// transaction is applied whole and exactly once, although no more than a part of it is ever in memory.
// Earlier transactions are committed first, so the order of commits stays the binlog's. Such a transaction
// goes over one connection: lanes would each hold a transaction open for its whole length.
func (a *applier) applyLarge(ctx context.Context, b *batch, t *txn) error {
	if a.large == nil {
		if !t.partial {
			return fmt.Errorf("%w: transaction %s ended without its first part", ErrUnsupported, t.gtid)
		}
		if err := a.flush(ctx, b); err != nil {
			return err
		}
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		tx, err := a.r.dst.BeginTx(lctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			cancel()
			return fmt.Errorf("apply to target: begin: %w", err)
		}
		a.large = &largeTxn{gtid: t.gtid, tx: tx, cancel: cancel}
		a.r.log.Info("applying a large source transaction in parts", "gtid", t.gtid)
	}
	l := a.large
	if t.gtid != l.gtid {
		return fmt.Errorf("%w: transaction %s began before %s ended", ErrUnsupported, t.gtid, l.gtid)
	}
	if t.dropped {
		a.abortLarge()
		a.r.log.Warn("rolled back the parts of a source transaction its binlog file ends inside", "transaction", t.gtid, "parts", l.parts)
		return nil
	}
	if t.rolledBack {
		// The source rolled it back: so is everything its parts wrote. The batch was flushed at the first
		// part; the transaction joins it without rows, and its position commits with the next flush.
		a.abortLarge()
		a.r.log.Info("rolled back the parts of a source transaction that ended in ROLLBACK", "gtid", t.gtid, "parts", l.parts)
		if err := b.add(t); err != nil {
			return fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		return nil
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.r.cfg.FlushTimeout)
	defer cancel()
	ops, err := a.notAhead(t)
	if err != nil {
		return err
	}
	// A lock wait timeout rolls back only the statement that waited: the part is applied again in the same
	// transaction (its earlier statements once more, in order, which leaves the same rows), rather than the
	// whole transaction being thrown away and streamed again.
	for attempt := 1; ; attempt++ {
		err = a.applyOps(fctx, l.tx, ops)
		if err == nil || attempt == laneRetries || !dbconn.ServerError(err, 1205) {
			break
		}
		a.r.log.Debug("a part of a large transaction waited too long for a lock; applying it again", "gtid", t.gtid, "attempt", attempt)
	}
	if err != nil {
		return fmt.Errorf("apply to target (part %d of transaction %s): %w", l.parts+1, t.gtid, err)
	}
	// Every id of the part is marked touched, those a lane ahead applied before a crash too: that lane's
	// commit carried no mark (the marks of a batch over lanes are written by lane 0, which never committed),
	// so a chunk verified equal before it would otherwise still look untouched (flush does the same).
	if err := a.touch(fctx, l.tx, t.ops); err != nil {
		return err
	}
	l.parts++
	l.sum.Inserts += t.counts.Inserts
	l.sum.Updates += t.counts.Updates
	l.sum.Deletes += t.counts.Deletes
	if h := a.r.cfg.Hooks.FragmentApplied; h != nil && t.partial {
		if err := h(t.gtid, t.bytes); err != nil {
			return err
		}
	}
	if t.partial {
		return nil
	}
	pos := b.pos.Clone()
	if err := pos.Add(t.position()); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	l.sum.Transactions = 1
	if err := a.r.store.SaveStream(fctx, l.tx, a.epoch, checkpoint.StreamProgress{GTID: pos.String(), Added: l.sum, LastEventAt: t.commitTS}); err != nil {
		return err
	}
	// The COMMIT of a transaction applied in parts writes all of them: it gets a flush timeout of its own.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), a.r.cfg.FlushTimeout)
	defer ccancel()
	if err := dbconn.Commit(cctx, l.tx); err != nil {
		return fmt.Errorf("apply to target: commit: %w", err)
	}
	sum, parts := l.sum, l.parts
	a.large = nil
	l.cancel()
	if h := a.r.cfg.Hooks.AfterPositionCommit; h != nil {
		if err := h(); err != nil {
			return err
		}
	}
	b.pos = pos
	a.passedAhead(pos)
	a.r.committed(pos, t.seq, t.commitTS)
	a.count(sum)
	a.r.log.Info("applied a large source transaction", "gtid", t.gtid, "parts", parts, "rows", sum.Inserts+sum.Updates+sum.Deletes)
	if h := a.r.cfg.Hooks.AfterBatchApplied; h != nil {
		h(pos.String())
	}
	return nil
}

// touch tells the verification ledger (Config.Touched), inside tx, which ids ops changed.
func (a *applier) touch(ctx context.Context, tx *sql.Tx, ops []op) error {
	touched := a.r.cfg.Touched
	if touched == nil || len(ops) == 0 {
		return nil
	}
	ids := make([]uint64, len(ops))
	for i, o := range ops {
		ids[i] = o.id
	}
	if err := touched(ctx, tx, ids); err != nil {
		return fmt.Errorf("apply to target: mark verified chunks touched: %w", err)
	}
	return nil
}

// abortLarge rolls back a large transaction still open.
func (a *applier) abortLarge() {
	if l := a.large; l != nil {
		_ = l.tx.Rollback()
		l.cancel()
		a.large = nil
	}
}

func (a *applier) count(sum checkpoint.Counters) {
	m := a.r.m
	m.AppliedTx.Add(float64(sum.Transactions))
	m.AppliedRows.WithLabelValues("insert").Add(float64(sum.Inserts))
	m.AppliedRows.WithLabelValues("update").Add(float64(sum.Updates))
	m.AppliedRows.WithLabelValues("delete").Add(float64(sum.Deletes))
}

// applyOps executes ops, in order, in tx.
func (a *applier) applyOps(ctx context.Context, tx *sql.Tx, ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	stmts := map[string]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	w := &stmtWriter{a: a, exec: func(q string) error {
		_, err := tx.ExecContext(ctx, q)
		return err
	}, execArgs: func(q string, args []any) error {
		st, ok := stmts[q]
		if !ok {
			var err error
			if st, err = tx.PrepareContext(ctx, q); err != nil {
				return err
			}
			stmts[q] = st
		}
		_, err := st.ExecContext(ctx, args...)
		return err
	}}
	for _, o := range ops {
		if err := w.add(o); err != nil {
			return err
		}
	}
	return w.finish()
}

// stmtWriter turns a sequence of ops into as few statements as order allows: a run of upserts becomes one
// multi-row INSERT, a run of deletes one DELETE … IN, each bounded by stmtBudget.
type stmtWriter struct {
	a        *applier
	exec     func(string) error
	execArgs func(string, []any) error
	args     []any // binary mode: the current run's values
	argBytes int
	kind     opKind
	sb       strings.Builder
	ids      []uint64            // ids of the current run
	seen     map[uint64]struct{} // ids of the current upsert run (deleteInsert mode)
}

func (w *stmtWriter) add(o op) error {
	if len(w.ids) > 0 && w.kind != o.kind {
		if err := w.finish(); err != nil {
			return err
		}
	}
	w.kind = o.kind
	if o.kind == opDelete {
		w.ids = append(w.ids, o.id)
		if len(w.ids) >= maxDeleteIDs {
			return w.finish()
		}
		return nil
	}
	if w.a.deleteInsert {
		// One INSERT cannot hold the same id twice without ON DUPLICATE KEY UPDATE: start a new run.
		if _, dup := w.seen[o.id]; dup {
			if err := w.finish(); err != nil {
				return err
			}
		}
		if w.seen == nil {
			w.seen = map[uint64]struct{}{}
		}
		w.seen[o.id] = struct{}{}
	}
	if w.a.binary {
		w.ids = append(w.ids, o.id)
		for _, v := range o.row {
			w.args = append(w.args, v)
			switch x := v.(type) {
			case string:
				w.argBytes += len(x)
			case []byte:
				w.argBytes += len(x)
			default:
				w.argBytes += 8
			}
		}
		if len(w.ids) >= binaryRows || w.argBytes >= stmtBudget {
			return w.finish()
		}
		return nil
	}
	if len(w.ids) == 0 {
		w.sb.WriteString(w.a.insertHead)
	} else {
		w.sb.WriteByte(',')
	}
	w.ids = append(w.ids, o.id)
	w.sb.WriteByte('(')
	for i, v := range o.row {
		if i > 0 {
			w.sb.WriteByte(',')
		}
		if w.a.intro[i] != "" {
			switch v.(type) {
			case string, []byte:
				w.sb.WriteString(w.a.intro[i])
			}
		}
		if !sqllit.Value(&w.sb, v) {
			return fmt.Errorf("%w: column %s has a value of unsupported type %T", ErrSchema, w.a.cols[i], v)
		}
	}
	w.sb.WriteByte(')')
	if w.sb.Len() >= stmtBudget {
		return w.finish()
	}
	return nil
}

// finish executes the current run.
func (w *stmtWriter) finish() error {
	if len(w.ids) == 0 {
		return nil
	}
	defer func() {
		w.sb.Reset()
		w.ids = w.ids[:0]
		w.args = w.args[:0]
		w.argBytes = 0
		clear(w.seen)
	}()
	if w.kind == opUpsert && w.a.binary {
		var q strings.Builder
		q.WriteString(w.a.insertHead)
		for i := range w.ids {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(w.a.placeholders)
		}
		q.WriteString(w.a.upsertTail)
		return w.execArgs(q.String(), w.args)
	}
	if w.kind == opDelete || w.a.deleteInsert {
		if err := w.exec(w.deleteStmt()); err != nil {
			return err
		}
		if w.kind == opDelete {
			return nil
		}
	} else {
		w.sb.WriteString(w.a.upsertTail)
	}
	return w.exec(w.sb.String())
}

func (w *stmtWriter) deleteStmt() string {
	var d strings.Builder
	d.Grow(len(w.ids)*11 + 64)
	d.WriteString("DELETE FROM " + w.a.target + " WHERE " + table.QuoteIdent(table.IDColumn) + " IN (")
	var buf [20]byte
	for i, id := range w.ids {
		if i > 0 {
			d.WriteByte(',')
		}
		d.Write(strconv.AppendUint(buf[:0], id, 10))
	}
	d.WriteByte(')')
	return d.String()
}
