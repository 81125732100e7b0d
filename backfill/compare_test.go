package backfill_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/csmh-sync/csmh-sync/table"
)

// tableReader streams a table's rows ordered by id, each as one string per column of cols (matched by name, so
// column order and int/bigint differences do not matter). Datetimes go through DATE_FORMAT with microseconds;
// the statement is prepared, so doubles arrive in the binary protocol and print in their exact shortest form.
type tableReader struct {
	rows *sql.Rows
	vals []sql.NullString
	ptrs []any
}

func newTableReader(ctx context.Context, db *sql.DB, name table.Name, cols []table.Column) (*tableReader, error) {
	exprs := make([]string, len(cols))
	for i, c := range cols {
		q := table.QuoteIdent(c.Name)
		switch c.DataType {
		case "datetime", "timestamp":
			exprs[i] = "DATE_FORMAT(" + q + ", '%Y-%m-%d %H:%i:%s.%f')"
		default:
			exprs[i] = q
		}
	}
	st, err := db.PrepareContext(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM "+name.Quoted()+" ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	rows, err := st.QueryContext(ctx)
	if err != nil {
		return nil, err
	}
	r := &tableReader{rows: rows, vals: make([]sql.NullString, len(cols)), ptrs: make([]any, len(cols))}
	for i := range r.vals {
		r.ptrs[i] = &r.vals[i]
	}
	return r, nil
}

// next returns the next row rendered as strings (NULL as `NULL`, a string as its quoted form), or nil at the end.
func (r *tableReader) next() ([]string, error) {
	if !r.rows.Next() {
		return nil, r.rows.Err()
	}
	if err := r.rows.Scan(r.ptrs...); err != nil {
		return nil, err
	}
	out := make([]string, len(r.vals))
	for i, v := range r.vals {
		if v.Valid {
			out[i] = fmt.Sprintf("%q", v.String)
		} else {
			out[i] = "NULL"
		}
	}
	return out, nil
}

// diffTables compares every row of two tables, columns by name, and returns up to 10 differences and their count.
func diffTables(ctx context.Context, src *sql.DB, srcName table.Name, dst *sql.DB, dstName table.Name) ([]string, int, error) {
	st, err := table.Load(ctx, src, srcName)
	if err != nil {
		return nil, 0, err
	}
	cols := st.Columns // id first in CSMH: rows are matched by column 0
	if !strings.EqualFold(cols[0].Name, "id") {
		return nil, 0, fmt.Errorf("id is not the first column of %s", srcName)
	}
	ra, err := newTableReader(ctx, src, srcName, cols)
	if err != nil {
		return nil, 0, err
	}
	defer ra.rows.Close()
	rb, err := newTableReader(ctx, dst, dstName, cols)
	if err != nil {
		return nil, 0, err
	}
	defer rb.rows.Close()
	var diffs []string
	n := 0
	note := func(format string, args ...any) {
		if n++; len(diffs) < 10 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	a, err := ra.next()
	if err != nil {
		return nil, 0, err
	}
	b, err := rb.next()
	if err != nil {
		return nil, 0, err
	}
	id := func(r []string) uint64 {
		var v uint64
		fmt.Sscanf(strings.Trim(r[0], `"`), "%d", &v)
		return v
	}
	for a != nil || b != nil {
		switch {
		case b == nil || (a != nil && id(a) < id(b)):
			note("id %d missing in the target", id(a))
			a, err = ra.next()
		case a == nil || id(b) < id(a):
			note("id %d only in the target", id(b))
			b, err = rb.next()
		default:
			for i := range a {
				if a[i] != b[i] {
					note("id %d column %s: source %.80s, target %.80s", id(a), cols[i].Name, a[i], b[i])
					break
				}
			}
			if a, err = ra.next(); err == nil {
				b, err = rb.next()
			}
		}
		if err != nil {
			return diffs, n, err
		}
	}
	return diffs, n, nil
}
