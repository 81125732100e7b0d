package verify

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/csmh-sync/csmh-sync/table"
)

// Digests for verify_test: the external tests start servers through the harness, which imports this package.
type Digest = digest

const (
	DigestMD5      = digestMD5
	DigestCRC      = digestCRC
	DigestCRCTwice = digestCRCTwice
)

// DigestOf is digestOf.
func DigestOf(ctx context.Context, dbs ...*sql.DB) digest { return digestOf(ctx, dbs...) }

// ChunkSums returns both tables' chunk aggregates of [lo, hi] in digest d, printed.
func ChunkSums(ctx context.Context, db *sql.DB, src, dst table.Name, d digest, lo, hi uint64) (string, string, error) {
	st, err := table.Load(ctx, db, src)
	if err != nil {
		return "", "", err
	}
	dt, err := table.Load(ctx, db, dst)
	if err != nil {
		return "", "", err
	}
	pairs, _, err := pairColumns(st, dt)
	if err != nil {
		return "", "", err
	}
	s, t := newSides(st, dt, db, db, pairs, d)
	var out [2]string
	for i, sd := range []*side{s, t} {
		var o sums
		if err := db.QueryRowContext(ctx, sd.checksumSQL(), lo, hi).Scan(&o.n, &o.h, &o.q1, &o.q2); err != nil {
			return "", "", err
		}
		out[i] = fmt.Sprintf("%+v", o)
	}
	return out[0], out[1], nil
}
