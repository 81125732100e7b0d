package harness

import (
	"context"
	"database/sql"
	"fmt"
)

// rowQuery selects the CSMH columns by name in one canonical form, so int vs bigint, datetime precision and
// column order do not matter.
const rowQuery = `SELECT CAST(id AS UNSIGNED), IFNULL(version, '\N'), DATE_FORMAT(created, '%%Y-%%m-%%d %%H:%%i:%%s.%%f'),
  IFNULL(state, '\N'), ISNULL(state), IFNULL(CAST(grade AS CHAR), '\N'), IFNULL(CAST(max_grade AS CHAR), '\N'),
  CAST(student_module_id AS UNSIGNED), ISNULL(version) FROM %s WHERE id BETWEEN ? AND ? ORDER BY id`

// Diff compares every row of two tables with ids in [lo, hi], streaming both in id order, and returns up to
// 20 human-readable differences (missing, extra, different) and their total count.
func Diff(ctx context.Context, a *sql.DB, aTable string, b *sql.DB, bTable string, lo, hi uint64) ([]string, int, error) {
	ra, err := a.QueryContext(ctx, fmt.Sprintf(rowQuery, aTable), lo, hi)
	if err != nil {
		return nil, 0, err
	}
	defer ra.Close()
	rb, err := b.QueryContext(ctx, fmt.Sprintf(rowQuery, bTable), lo, hi)
	if err != nil {
		return nil, 0, err
	}
	defer rb.Close()
	next := func(r *sql.Rows) ([]string, uint64, bool, error) {
		if !r.Next() {
			return nil, 0, false, r.Err()
		}
		v := make([]string, 9)
		p := make([]any, 9)
		for i := range v {
			p[i] = &v[i]
		}
		if err := r.Scan(p...); err != nil {
			return nil, 0, false, err
		}
		var id uint64
		fmt.Sscan(v[0], &id)
		return v, id, true, nil
	}
	var out []string
	n := 0
	note := func(s string) {
		n++
		if len(out) < 20 {
			out = append(out, s)
		}
	}
	va, ia, oka, err := next(ra)
	if err != nil {
		return nil, 0, err
	}
	vb, ib, okb, err := next(rb)
	if err != nil {
		return nil, 0, err
	}
	for oka || okb {
		switch {
		case oka && (!okb || ia < ib):
			note(fmt.Sprintf("id %d missing in %s", ia, bTable))
			va, ia, oka, err = next(ra)
		case okb && (!oka || ib < ia):
			note(fmt.Sprintf("id %d extra in %s", ib, bTable))
			vb, ib, okb, err = next(rb)
		default:
			for i := range va {
				if va[i] != vb[i] {
					note(fmt.Sprintf("id %d differs in column %d: %.60q vs %.60q", ia, i, va[i], vb[i]))
					break
				}
			}
			va, ia, oka, err = next(ra)
			if err == nil {
				vb, ib, okb, err = next(rb)
			}
		}
		if err != nil {
			return out, n, err
		}
	}
	return out, n, nil
}
