package replication

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/table"
)

type opKind uint8

const (
	opUpsert opKind = iota
	opDelete
)

// op is one row change reduced to what the target needs: the full after-image for an upsert (in the
// source table's column order), the id for a delete.
type op struct {
	kind opKind
	id   uint64
	row  []any
}

// txn is one complete source transaction: its GTID, the changes it made to the source table (often none)
// and the source's timestamp of its commit event, which the lag is measured from.
type txn struct {
	gtid     string
	ops      []op
	counts   checkpoint.Counters
	commitTS time.Time
	exactTS  time.Time // MySQL 8's microsecond commit timestamp from the GTID event; zero elsewhere
	bytes    int       // approximate size of the row data, for the applier's statement budget
	seq      uint64
	// partial marks a fragment of a transaction too large to hold whole: more of the same GTID follows, and
	// the last part, not partial, carries the commit time and sequence number.
	partial bool
	parts   int // parts of this transaction already handed to the applier
	// pos is, in file mode, the binlog position after the transaction ("file:name:offset"); gtid then names
	// the transaction by the offset it starts at. Empty in GTID mode.
	pos string
	// marker: no transaction, only a position the stream moved to between transactions (file mode).
	marker bool
	// rolledBack: the source rolled the transaction back (it ended in ROLLBACK). It has no changes; parts of
	// it already applied are rolled back on the target, and only the position advances.
	rolledBack bool
	// dropped: the transaction's binlog file ended inside it (the source stopped while writing it, and never
	// committed it). Only a transaction with parts already applied travels on: they are rolled back on the
	// target, and the position does not move.
	dropped bool
}

// position is what the transaction adds to the stream position: its GTID, or in file mode its end.
func (t *txn) position() string {
	if t.pos != "" {
		return t.pos
	}
	return t.gtid
}

// rowDecoder turns rows events of the source table into ops. Binlog rows carry values by column position;
// positions are mapped to the source's column NAMES (from the table-map event when the server sends column
// names, binlog_row_metadata=FULL; otherwise from information_schema, read when the stream connects), and
// the applier names columns, so the target may order its columns differently.
type rowDecoder struct {
	cols     []table.Column // source columns, table order
	idIdx    int
	boundary uint64
	// perm maps a binlog column position to an index in cols, for the table-map event it was built from.
	permFor *replication.TableMapEvent
	perm    []int
}

func newRowDecoder(src *table.Table, boundary uint64) (*rowDecoder, error) {
	d := &rowDecoder{cols: src.Columns, idIdx: -1, boundary: boundary}
	for i, c := range src.Columns {
		if strings.EqualFold(c.Name, table.IDColumn) {
			d.idIdx = i
		}
	}
	if d.idIdx < 0 {
		return nil, fmt.Errorf("%w: %s has no id column", ErrSchema, src.Name)
	}
	return d, nil
}

// mapping returns, for the event's table map, where each binlog column goes in cols.
func (d *rowDecoder) mapping(tm *replication.TableMapEvent) ([]int, error) {
	if tm == d.permFor && d.perm != nil {
		return d.perm, nil
	}
	n := int(tm.ColumnCount)
	perm := make([]int, n)
	if len(tm.ColumnName) == n {
		for i, raw := range tm.ColumnName {
			perm[i] = -1
			for j, c := range d.cols {
				if strings.EqualFold(c.Name, string(raw)) {
					perm[i] = j
				}
			}
			if perm[i] < 0 {
				return nil, fmt.Errorf("%w: the binlog has a column %q the source table had no column of when the stream started: the table was altered; run preflight, adapt the target, then start again",
					ErrSchema, raw)
			}
		}
	} else {
		for i := range perm {
			perm[i] = i
		}
	}
	if n != len(d.cols) {
		return nil, fmt.Errorf("%w: binlog rows have %d columns, the source table %d: the table was altered; run preflight, adapt the target, then start again",
			ErrSchema, n, len(d.cols))
	}
	d.permFor, d.perm = tm, perm
	return perm, nil
}

// decode appends the event's changes to t. Any row whose id (before or after image) is at or above the id
// boundary stops the stream: applying it could overwrite or delete a row the app wrote into the target.
func (d *rowDecoder) decode(t *txn, e *replication.RowsEvent) error {
	perm, err := d.mapping(e.Table)
	if err != nil {
		return err
	}
	for _, skipped := range e.SkippedColumns {
		if len(skipped) > 0 {
			return fmt.Errorf("%w: a rows event of the source table lacks columns (binlog_row_image is not FULL on the source): set binlog_row_image=FULL, run preflight, then start again", ErrSchema)
		}
	}
	rows := make([][]any, len(e.Rows))
	ids := make([]uint64, len(e.Rows))
	for i, raw := range e.Rows {
		if len(raw) != len(perm) {
			return fmt.Errorf("%w: a binlog row has %d values for %d columns", ErrSchema, len(raw), len(perm))
		}
		row := make([]any, len(d.cols))
		for j, v := range raw {
			row[perm[j]] = unsign(d.cols[perm[j]], v)
		}
		id, ok := toID(row[d.idIdx])
		if !ok {
			return fmt.Errorf("%w: source id value %v (%T) is not a non-negative integer", ErrSchema, row[d.idIdx], row[d.idIdx])
		}
		if d.boundary > 0 && id >= d.boundary {
			return fmt.Errorf("%w: the source wrote a row with id %d, at or above the id boundary %d where the app writes its own rows into the target: stopped instead of overwriting one: if the app has written no row to the target yet, 'csmh-sync cutover --bump-auto-increment' raises the target's AUTO_INCREMENT and the boundary; otherwise make every app server write to the target only (ENABLE_CSMH_EXTENDED) so the source stops growing; then start again",
				ErrIDCollision, id, d.boundary)
		}
		rows[i], ids[i] = row, id
	}
	switch e.Type() {
	case replication.EnumRowsEventTypeInsert:
		for i, row := range rows {
			t.add(op{kind: opUpsert, id: ids[i], row: row})
			t.counts.Inserts++
		}
	case replication.EnumRowsEventTypeUpdate:
		// Rows alternate before-image, after-image. The after-image is upserted; if the id itself changed,
		// the row under the old id goes first.
		if len(rows)%2 != 0 {
			return fmt.Errorf("%w: an update event has an odd number of row images", ErrSchema)
		}
		for i := 0; i < len(rows); i += 2 {
			if ids[i] != ids[i+1] {
				t.add(op{kind: opDelete, id: ids[i]})
			}
			t.add(op{kind: opUpsert, id: ids[i+1], row: rows[i+1]})
			t.counts.Updates++
		}
	case replication.EnumRowsEventTypeDelete:
		for _, id := range ids {
			t.add(op{kind: opDelete, id: id})
			t.counts.Deletes++
		}
	default:
		return fmt.Errorf("%w: unsupported rows event %s on the source table", ErrSchema, e.Type())
	}
	return nil
}

func (t *txn) add(o op) {
	t.ops = append(t.ops, o)
	t.bytes += 16
	for _, v := range o.row {
		switch x := v.(type) {
		case string:
			t.bytes += len(x) + 3
		case []byte:
			t.bytes += len(x) + 3
		default:
			t.bytes += 24
		}
	}
}

// unsign reinterprets a negative integer of an UNSIGNED column: without signedness metadata in the table
// map, go-mysql decodes every integer as signed, so 4294967295 in an int unsigned arrives as int32(-1).
func unsign(c table.Column, v any) any {
	if !c.Unsigned {
		return v
	}
	switch x := v.(type) {
	case int8:
		return uint64(uint8(x))
	case int16:
		return uint64(uint16(x))
	case int32:
		if c.DataType == "mediumint" {
			return uint64(uint32(x) & 0xFFFFFF)
		}
		return uint64(uint32(x))
	case int64:
		return uint64(x)
	}
	return v
}

// toID reads the integer primary key as go-mysql decodes it (signed types unless the server sent
// signedness metadata).
func toID(v any) (uint64, bool) {
	switch x := v.(type) {
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	case int:
		return uint64(x), x >= 0
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	}
	return 0, false
}
