package replication

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
	"github.com/csmh-sync/csmh-sync/table"
)

type opKind uint8

const (
	opUpsert opKind = iota
	opDelete
)

// op is one row change, reduced to what the target needs: the full row for an upsert, the id for a delete.
type op struct {
	kind opKind
	id   uint64
	row  []any // source column order
}

// txn is one complete source transaction.
type txn struct {
	gtid     string
	ops      []op
	counts   checkpoint.Counters
	commitTS time.Time
}

// batch collects complete source transactions for one target transaction.
type batch struct {
	pos     *gtid.Set // position after the last transaction added
	txs     []*txn
	rows    int
	started time.Time
	dirty   bool // position advanced since the last commit
}

func newBatch(pos *gtid.Set) *batch { return &batch{pos: pos.Clone()} }

func (b *batch) add(t *txn) {
	if !b.dirty {
		b.started = time.Now()
	}
	_ = b.pos.Add(t.gtid)
	b.dirty = true
	if len(t.ops) > 0 {
		b.txs = append(b.txs, t)
		b.rows += len(t.ops)
	}
}

func (b *batch) pending() bool { return b.dirty }

// deadline: a batch with rows waits BatchDelay for more; position-only batches (other tables' writes) are
// committed at most once a second, enough to keep the checkpoint current on a busy but unrelated source.
func (b *batch) deadline(delay time.Duration) time.Time {
	if b.rows == 0 {
		return b.started.Add(time.Second)
	}
	return b.started.Add(delay)
}

func (b *batch) full(maxRows int) bool { return b.rows >= maxRows }

func (b *batch) oldest() time.Time {
	if len(b.txs) == 0 {
		return time.Time{}
	}
	return b.txs[0].commitTS
}

// applier writes batches to the target.
type applier struct {
	r            *Replicator
	srcCols      []string
	idIdx        int
	insertHead   string
	upsertTail   string
	deleteInsert bool // the target has another unique key: never let ON DUPLICATE KEY UPDATE hit it
	maxStmt      int
}

func newApplier(r *Replicator, src, dst *table.Table) (*applier, error) {
	a := &applier{r: r, idIdx: -1, maxStmt: 4 << 20, deleteInsert: len(dst.UniqueKeys) > 0}
	var cols, upd []string
	for i, c := range src.Columns {
		if dst.Column(c.Name) == nil {
			return nil, fmt.Errorf("%w: target has no column %s", ErrSchema, c.Name)
		}
		a.srcCols = append(a.srcCols, c.Name)
		q := table.QuoteIdent(c.Name)
		cols = append(cols, q)
		if strings.EqualFold(c.Name, table.IDColumn) {
			a.idIdx = i
		} else {
			upd = append(upd, q+"=VALUES("+q+")")
		}
	}
	if a.idIdx < 0 {
		return nil, fmt.Errorf("%w: source has no id column", ErrSchema)
	}
	a.insertHead = "INSERT INTO " + r.cfg.TargetTable.Quoted() + " (" + strings.Join(cols, ",") + ") VALUES "
	a.upsertTail = " ON DUPLICATE KEY UPDATE " + strings.Join(upd, ",")
	return a, nil
}

// collect turns a rows event of the source table into ops of the current transaction.
func (a *applier) collect(t *txn, _ replication.EventType, e *replication.RowsEvent) error {
	for _, row := range e.Rows {
		if len(row) != len(a.srcCols) {
			return fmt.Errorf("%w: a row has %d columns, the table %d: the table was altered; run preflight and start again",
				ErrSchema, len(row), len(a.srcCols))
		}
	}
	switch e.Type() {
	case replication.EnumRowsEventTypeInsert:
		for _, row := range e.Rows {
			if err := a.add(t, opUpsert, row); err != nil {
				return err
			}
			t.counts.Inserts++
		}
	case replication.EnumRowsEventTypeUpdate:
		for i := 0; i+1 < len(e.Rows); i += 2 {
			before, after := e.Rows[i], e.Rows[i+1]
			bid, _ := toID(before[a.idIdx])
			aid, _ := toID(after[a.idIdx])
			if bid != aid {
				t.ops = append(t.ops, op{kind: opDelete, id: bid})
			}
			if err := a.add(t, opUpsert, after); err != nil {
				return err
			}
			t.counts.Updates++
		}
	case replication.EnumRowsEventTypeDelete:
		for _, row := range e.Rows {
			if err := a.add(t, opDelete, row); err != nil {
				return err
			}
			t.counts.Deletes++
		}
	}
	return nil
}

func (a *applier) add(t *txn, k opKind, row []any) error {
	id, ok := toID(row[a.idIdx])
	if !ok {
		return fmt.Errorf("%w: id value %v (%T)", ErrSchema, row[a.idIdx], row[a.idIdx])
	}
	if b := a.r.cfg.IDBoundary; b > 0 && id >= b && k == opUpsert {
		return fmt.Errorf("%w: source row id %d is at or above %d, where the app writes its own rows into the target: stopped instead of overwriting; raise the target AUTO_INCREMENT far above the source's, then start again",
			ErrIDCollision, id, b)
	}
	o := op{kind: k, id: id}
	if k == opUpsert {
		o.row = row
	}
	t.ops = append(t.ops, o)
	return nil
}

func toID(v any) (uint64, bool) {
	switch x := v.(type) {
	case int32:
		return uint64(uint32(x)), x >= 0
	case int64:
		return uint64(x), x >= 0
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8, int16, uint8, uint16, int:
		n, err := strconv.ParseUint(fmt.Sprint(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// flush applies the batch's transactions and its position in ONE target transaction.
func (a *applier) flush(ctx context.Context, b *batch) error {
	if !b.dirty {
		return nil
	}
	tx, err := a.r.dst.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var sum checkpoint.Counters
	var last time.Time
	var sb strings.Builder
	var ups, dels int
	var delIDs []uint64
	exec := func() error {
		if sb.Len() == 0 {
			return nil
		}
		if ups > 0 && !a.deleteInsert {
			sb.WriteString(a.upsertTail)
		}
		_, err := tx.ExecContext(ctx, sb.String())
		sb.Reset()
		ups, dels = 0, 0
		return err
	}
	deleteIDs := func(ids []uint64) error {
		sb.WriteString("DELETE FROM " + a.r.cfg.TargetTable.Quoted() + " WHERE id IN (")
		for i, id := range ids {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(strconv.FormatUint(id, 10))
		}
		sb.WriteByte(')')
		dels = len(ids)
		return exec()
	}
	for _, t := range b.txs {
		for _, o := range t.ops {
			switch o.kind {
			case opDelete:
				if ups > 0 {
					if err := exec(); err != nil {
						return err
					}
				}
				delIDs = append(delIDs, o.id)
				if len(delIDs) >= 1000 {
					if err := deleteIDs(delIDs); err != nil {
						return err
					}
					delIDs = delIDs[:0]
				}
			case opUpsert:
				if len(delIDs) > 0 {
					if err := deleteIDs(delIDs); err != nil {
						return err
					}
					delIDs = delIDs[:0]
				}
				if a.deleteInsert {
					if err := deleteIDs([]uint64{o.id}); err != nil {
						return err
					}
				}
				if ups == 0 {
					sb.WriteString(a.insertHead)
				} else {
					sb.WriteByte(',')
				}
				sb.WriteByte('(')
				for i, v := range o.row {
					if i > 0 {
						sb.WriteByte(',')
					}
					if !sqllit.Value(&sb, v) {
						return fmt.Errorf("%w: column %s has an unsupported value type %T", ErrSchema, a.srcCols[i], v)
					}
				}
				sb.WriteByte(')')
				ups++
				if sb.Len() >= a.maxStmt || a.deleteInsert {
					if err := exec(); err != nil {
						return err
					}
				}
			}
		}
		sum.Transactions++
		sum.Inserts += t.counts.Inserts
		sum.Updates += t.counts.Updates
		sum.Deletes += t.counts.Deletes
		last = t.commitTS
	}
	if len(delIDs) > 0 {
		if err := deleteIDs(delIDs); err != nil {
			return err
		}
	}
	if err := exec(); err != nil {
		return err
	}
	_ = dels
	if err := a.r.store.SaveStream(ctx, tx, checkpoint.StreamProgress{GTID: b.pos.String(), Added: sum, LastEventAt: last}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	a.r.committed(b.pos, last)
	m := a.r.m
	m.AppliedTx.Add(float64(sum.Transactions))
	m.AppliedRows.WithLabelValues("insert").Add(float64(sum.Inserts))
	m.AppliedRows.WithLabelValues("update").Add(float64(sum.Updates))
	m.AppliedRows.WithLabelValues("delete").Add(float64(sum.Deletes))
	m.CheckpointAge.Set(0)
	b.txs, b.rows, b.dirty = b.txs[:0], 0, false
	a.r.updateLag(b)
	if h := a.r.cfg.Hooks.AfterBatchApplied; h != nil {
		h(b.pos.String())
	}
	return nil
}
