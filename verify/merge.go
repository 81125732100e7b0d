package verify

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strconv"
)

// cursor yields rows in ascending id order; val is valid until the next call.
type cursor interface {
	next() (id uint64, val []byte, ok bool, err error)
}

// merge walks two id-ordered streams like a merge join and emits each id that is only in src (missing),
// only in dst (extra), or in both with different bytes. It holds one row per side. When emit returns
// errStop, merge stops early and returns the last id it has fully compared (ids up to it are done).
func merge(src, dst cursor, emit func(diff) error) (last uint64, err error) {
	sid, sval, sok, err := src.next()
	if err != nil {
		return 0, err
	}
	did, dval, dok, err := dst.next()
	if err != nil {
		return 0, err
	}
	for sok || dok {
		var d *diff
		switch {
		case sok && (!dok || sid < did):
			d = &diff{sid, missing}
			last = sid
			sid, sval, sok, err = src.next()
		case dok && (!sok || did < sid):
			d = &diff{did, extra}
			last = did
			did, dval, dok, err = dst.next()
		default:
			if !bytes.Equal(sval, dval) {
				d = &diff{sid, different}
			}
			last = sid
			sid, sval, sok, err = src.next()
			if err == nil {
				did, dval, dok, err = dst.next()
			}
		}
		if err != nil {
			return last, err
		}
		if d != nil {
			if err := emit(*d); err != nil {
				return last, err
			}
		}
	}
	return last, nil
}

// rowsCursor reads (id, field…) rows from a query and encodes the fields length-prefixed, so that the
// concatenation is unambiguous and two rows are equal exactly when every field is.
type rowsCursor struct {
	rows  *sql.Rows
	vals  []sql.RawBytes
	ptrs  []any
	buf   []byte
	count int64
	prev  uint64
}

func newRowsCursor(rows *sql.Rows) (*rowsCursor, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	c := &rowsCursor{rows: rows, vals: make([]sql.RawBytes, len(cols)), ptrs: make([]any, len(cols))}
	for i := range c.vals {
		c.ptrs[i] = &c.vals[i]
	}
	return c, nil
}

func (c *rowsCursor) next() (uint64, []byte, bool, error) {
	if !c.rows.Next() {
		return 0, nil, false, c.rows.Err()
	}
	if err := c.rows.Scan(c.ptrs...); err != nil {
		return 0, nil, false, err
	}
	id, err := strconv.ParseUint(string(c.vals[0]), 10, 64)
	if err != nil {
		return 0, nil, false, fmt.Errorf("read id %q: %w", c.vals[0], err)
	}
	if c.count > 0 && id <= c.prev {
		// The merge is only correct on strictly ascending ids; a collation or cast surprise must not pass
		// silently.
		return 0, nil, false, fmt.Errorf("ids out of order: %d after %d", id, c.prev)
	}
	c.prev = id
	c.count++
	c.buf = c.buf[:0]
	for _, v := range c.vals[1:] {
		c.buf = binary.AppendUvarint(c.buf, uint64(len(v)))
		c.buf = append(c.buf, v...)
	}
	return id, c.buf, true, nil
}
