package table

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// EstimateRows is the optimizer's estimate of the rows with lo ≤ id ≤ hi: the `rows` of EXPLAIN over the
// primary key range. InnoDB answers it with a few index dives (records_in_range), without reading the rows,
// so it costs the same on a billion rows as on a thousand; it is an estimate (exact on small ranges, within a
// small factor on large ones), good for dividing work and for progress, never for correctness.
func EstimateRows(ctx context.Context, db *sql.DB, n Name, lo, hi uint64) (int64, error) {
	if hi < lo {
		return 0, nil
	}
	// Literals, not placeholders: the ids are integers, and EXPLAIN is not preparable on every server version.
	rows, err := db.QueryContext(ctx, fmt.Sprintf("EXPLAIN SELECT 1 FROM %s WHERE id BETWEEN %d AND %d", n.Quoted(), lo, hi))
	if err != nil {
		return 0, fmt.Errorf("estimate the rows of %s ids %d to %d: %w", n, lo, hi, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	at := -1
	for i, c := range cols {
		if strings.EqualFold(c, "rows") {
			at = i
		}
	}
	if at < 0 {
		return 0, fmt.Errorf("estimate the rows of %s: EXPLAIN has no rows column (%s)", n, strings.Join(cols, ", "))
	}
	var est int64
	for rows.Next() { // one line for this single-table query
		vals := make([]any, len(cols))
		var v sql.NullInt64
		for i := range vals {
			vals[i] = new(sql.RawBytes)
		}
		vals[at] = &v
		if err := rows.Scan(vals...); err != nil {
			return 0, fmt.Errorf("estimate the rows of %s: %w", n, err)
		}
		est = max(est, v.Int64)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("estimate the rows of %s: %w", n, err)
	}
	return est, nil
}
