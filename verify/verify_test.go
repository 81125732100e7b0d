package verify_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/verify"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

var (
	srcName, _ = table.ParseName(harness.SourceTable)
	dstName, _ = table.ParseName(harness.TargetTable)
)

const (
	genRows   = 30_000
	chunkRows = 2000
	cols      = "id, version, created, state, grade, max_grade, student_module_id"
)

func open(t *testing.T, s *harness.Server) *sql.DB { return openDSN(t, s.DSN("")) }

func openDSN(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, _, err := dbconn.Open(context.Background(), dbconn.Endpoint{Role: "test", DSN: dsn}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type env struct {
	src, dst *sql.DB // root's, for the test's own writes and checks
	// toolSrc and toolDst are the verifier's, as the harness's users holding exactly the documented grants.
	toolSrc, toolDst *sql.DB
	gen              harness.GenResult
	m                *metrics.Metrics
}

func (e *env) run(t *testing.T, cfg verify.Config) *verify.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.SourceTable, cfg.TargetTable = srcName, dstName
	if cfg.ChunkRows == 0 {
		cfg.ChunkRows = chunkRows
	}
	v, err := verify.New(e.toolSrc, e.toolDst, e.m, harness.Logger(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.Run(ctx)
	if err != nil {
		t.Fatalf("verify %s: %v", cfg.Mode, err)
	}
	var b strings.Builder
	res.Print(&b)
	t.Logf("%s", b.String())
	return res
}

func (e *env) exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%.100s: %v", q, err)
	}
}

// nthID is the id at position n (0-based) of the source in id order.
func (e *env) nthID(t *testing.T, where string, n int) uint64 {
	t.Helper()
	var id uint64
	q := fmt.Sprintf("SELECT id FROM %s WHERE %s ORDER BY id LIMIT 1 OFFSET %d", harness.SourceTable, where, n)
	if err := e.src.QueryRow(q).Scan(&id); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return id
}

// acrossServers starts a source and a target server with the edX tables, the target's with dstSchema, and no
// rows.
func acrossServers(t *testing.T, dst harness.Options, dstSchema harness.SchemaOptions) *env {
	t.Helper()
	ctx := context.Background()
	ss, ds := harness.StartT(t, harness.Options{}), harness.StartT(t, dst)
	if err := ss.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	dstSchema.SkipSource = true
	if err := ds.LoadEdxSchemaWith(ctx, dstSchema); err != nil {
		t.Fatal(err)
	}
	return &env{src: open(t, ss), dst: open(t, ds), toolSrc: openDSN(t, ss.SourceDSN()), toolDst: openDSN(t, ds.TargetDSN()), m: metrics.Discard()}
}

func sameServer(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{})
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	db := open(t, s)
	e := &env{src: db, dst: db, toolSrc: openDSN(t, s.SourceDSN()), toolDst: openDSN(t, s.TargetDSN()), m: metrics.New(prometheus.NewRegistry())}
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, db, harness.SourceTable, harness.GenOptions{Rows: genRows, Seed: 7, LargeStateEvery: 3000}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, db, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT "+cols+" FROM "+harness.SourceTable)
	return e
}

func counter(t *testing.T, m *metrics.Metrics, result string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.VerifyChunks.WithLabelValues(result).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func equalIDs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func requireEqual(t *testing.T, res *verify.Result) {
	t.Helper()
	if !res.Equal || len(res.Missing)+len(res.Extra)+len(res.Different)+len(res.DifferentChunks) > 0 {
		t.Fatalf("want equal: %+v", res)
	}
}

// TestVerifySameServer walks one copy through every mode, injected differences, repair, the incremental
// ledger and the id boundary.
func TestVerifySameServer(t *testing.T) {
	e := sameServer(t)

	t.Run("equal copy is equal in every mode", func(t *testing.T) {
		for _, m := range []verify.Mode{verify.ModeCount, verify.ModeChecksum, verify.ModeRows} {
			var calls, lastDone, lastTotal int
			res := e.run(t, verify.Config{Mode: m, Progress: func(done, total int) {
				calls++
				if done < lastDone || done > total {
					t.Errorf("progress %d/%d after %d/%d", done, total, lastDone, lastTotal)
				}
				lastDone, lastTotal = done, total
			}})
			requireEqual(t, res)
			if calls != res.ChunksChecked || lastDone != lastTotal {
				t.Fatalf("%s: %d progress calls for %d chunks, last %d/%d", m, calls, res.ChunksChecked, lastDone, lastTotal)
			}
			if res.RowsChecked != genRows || res.ChunksChecked < genRows/chunkRows || res.ChunksSkipped != 0 {
				t.Fatalf("%s: rows %d chunks %d skipped %d", m, res.RowsChecked, res.ChunksChecked, res.ChunksSkipped)
			}
			if res.Start != uint64(e.gen.MinID) || res.End != uint64(e.gen.MaxID) {
				t.Fatalf("%s: range %d..%d, want %d..%d", m, res.Start, res.End, e.gen.MinID, e.gen.MaxID)
			}
		}
		if eq, diff := counter(t, e.m, "equal"), counter(t, e.m, "different"); diff != 0 || eq < 3*genRows/chunkRows {
			t.Fatalf("chunk metrics: equal %v, different %v", eq, diff)
		}
	})

	// Differences on the target: 3 deleted rows, a state changed by one character, a grade NULL → 0, and an
	// extra row at an id the source does not have, each in a different chunk.
	deleted := []uint64{e.nthID(t, "1", 100), e.nthID(t, "1", 12_000), e.nthID(t, "1", 29_990)}
	stateID := e.nthID(t, "CHAR_LENGTH(state) > 20", 2500)
	gradeID := e.nthID(t, "grade IS NULL", 300)
	var extraID uint64
	if err := e.src.QueryRow(`SELECT a.id + 1 FROM ` + harness.SourceTable + ` a WHERE a.id > 37000 AND NOT EXISTS
		(SELECT 1 FROM ` + harness.SourceTable + ` b WHERE b.id = a.id + 1) ORDER BY a.id LIMIT 1`).Scan(&extraID); err != nil {
		t.Fatal(err)
	}
	if extraID >= uint64(e.gen.MaxID) {
		t.Fatalf("extra id %d is not inside the range", extraID)
	}
	e.exec(t, e.dst, "DELETE FROM "+harness.TargetTable+" WHERE id IN (?, ?, ?)", deleted[0], deleted[1], deleted[2])
	e.exec(t, e.dst, "UPDATE "+harness.TargetTable+" SET state = CONCAT(LEFT(state, 10), IF(SUBSTRING(state, 11, 1) = 'a', 'b', 'a'), SUBSTRING(state, 12)) WHERE id = ?", stateID)
	e.exec(t, e.dst, "UPDATE "+harness.TargetTable+" SET grade = 0 WHERE id = ?", gradeID)
	e.exec(t, e.dst, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT ?, version, created, state, grade, max_grade, student_module_id FROM "+
		harness.SourceTable+" WHERE id = ?", extraID, deleted[1])

	t.Run("differences are found exactly", func(t *testing.T) {
		for _, m := range []verify.Mode{verify.ModeChecksum, verify.ModeRows} {
			res := e.run(t, verify.Config{Mode: m})
			if res.Equal {
				t.Fatalf("%s: equal", m)
			}
			equalIDs(t, string(m)+" missing", res.Missing, slices.Clone(deleted))
			equalIDs(t, string(m)+" different", res.Different, []uint64{stateID, gradeID})
			equalIDs(t, string(m)+" extra", res.Extra, []uint64{extraID})
			if res.MissingTotal != 3 || res.DifferentTotal != 2 || res.ExtraTotal != 1 || len(res.DifferentChunks) == 0 {
				t.Fatalf("%s: totals %+v", m, res)
			}
		}
		// Count mode sees what changes a count: the chunks holding the deleted rows and the extra row.
		res := e.run(t, verify.Config{Mode: verify.ModeCount})
		if res.Equal || len(res.Missing)+len(res.Extra)+len(res.Different) > 0 {
			t.Fatalf("count: %+v", res)
		}
		var holders []uint64
		for _, c := range res.DifferentChunks {
			for _, id := range append(slices.Clone(deleted), extraID) {
				if id >= c.Start && id <= c.End {
					holders = append(holders, id)
				}
			}
			if c.SourceCount == c.TargetCount {
				t.Errorf("count chunk %+v has equal counts", c)
			}
		}
		if len(res.DifferentChunks) != 4 || len(holders) != 4 {
			t.Fatalf("count: different chunks %+v hold %v, want exactly the 4 chunks of %v and %d", res.DifferentChunks, holders, deleted, extraID)
		}
	})

	t.Run("repair fixes them and a second run is equal", func(t *testing.T) {
		res := e.run(t, verify.Config{Repair: true})
		if !res.Equal || res.Repaired != 6 || res.MissingTotal != 3 || res.DifferentTotal != 2 || res.ExtraTotal != 1 {
			t.Fatalf("repair: %+v", res)
		}
		requireEqual(t, e.run(t, verify.Config{Mode: verify.ModeRows}))
		if d, n, err := harness.Diff(context.Background(), e.src, harness.SourceTable, e.dst, harness.TargetTable, 0, 1<<40); err != nil || n != 0 {
			t.Fatalf("independent diff after repair: %d %v %v", n, d, err)
		}
	})

	t.Run("incremental re-checks only touched chunks", func(t *testing.T) {
		full := e.run(t, verify.Config{})
		requireEqual(t, full)
		// Two chunks, each touched through a whole touch bucket inside it so no neighbour shares the bucket.
		a, b := e.innerBucket(t, 2), e.innerBucket(t, 9)
		changed := e.nthID(t, fmt.Sprintf("id BETWEEN %d AND %d", a, a+(1<<verify.TouchBucketBits)-1), 0)
		tx, err := e.dst.Begin()
		if err != nil {
			t.Fatal(err)
		}
		// As the applier does: the row change and the touch in one transaction.
		if _, err := tx.Exec("UPDATE "+harness.TargetTable+" SET max_grade = 12345 WHERE id = ?", changed); err != nil {
			t.Fatal(err)
		}
		if err := verify.MarkTouched(context.Background(), tx, dstName.Schema, []uint64{changed}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := verify.MarkTouched(context.Background(), e.dst, dstName.Schema, []uint64{b, b + 3}); err != nil {
			t.Fatal(err)
		}
		res := e.run(t, verify.Config{Incremental: true})
		if res.ChunksChecked != 2 || res.ChunksSkipped != full.ChunksChecked-2 {
			t.Fatalf("incremental checked %d, skipped %d of %d", res.ChunksChecked, res.ChunksSkipped, full.ChunksChecked)
		}
		equalIDs(t, "incremental different", res.Different, []uint64{changed})
		// The chunk that differed is re-checked until it is equal; the other one is settled.
		res = e.run(t, verify.Config{Incremental: true, Repair: true})
		if res.ChunksChecked != 1 || res.Repaired != 1 || !res.Equal {
			t.Fatalf("second incremental: %+v", res)
		}
		res = e.run(t, verify.Config{Incremental: true})
		if res.ChunksChecked != 1 || !res.Equal {
			t.Fatalf("third incremental: %+v", res)
		}
		res = e.run(t, verify.Config{Incremental: true})
		if res.ChunksChecked != 0 || !res.Equal || res.ChunksSkipped != full.ChunksChecked {
			t.Fatalf("fourth incremental: %+v", res)
		}
		// A change the stream never saw (the source lost it from its binlog: an incident the stream was told
		// to pass) is not seen by an incremental run while the ledger vouches; after ForgetProofs every chunk
		// is compared again, and repair mends it.
		lost := e.nthID(t, fmt.Sprintf("id BETWEEN %d AND %d", b, b+(1<<verify.TouchBucketBits)-1), 1)
		e.exec(t, e.src, "UPDATE "+harness.SourceTable+" SET max_grade = 54321 WHERE id = ?", lost)
		if res = e.run(t, verify.Config{Incremental: true}); res.ChunksChecked != 0 {
			t.Fatalf("incremental after an unseen change, before ForgetProofs: %+v", res)
		}
		if err := verify.ForgetProofs(context.Background(), e.dst, dstName.Schema); err != nil {
			t.Fatal(err)
		}
		res = e.run(t, verify.Config{Incremental: true, Repair: true})
		if res.ChunksChecked != full.ChunksChecked || res.Repaired != 1 {
			t.Fatalf("incremental after ForgetProofs checked %d of %d chunks, repaired %d; want all, 1", res.ChunksChecked, full.ChunksChecked, res.Repaired)
		}
		equalIDs(t, "after ForgetProofs", res.Different, []uint64{lost})
		if res = e.run(t, verify.Config{Incremental: true}); res.ChunksChecked != 1 || !res.Equal {
			t.Fatalf("incremental after the repair: %+v", res)
		}
		// A rows-mode run needs more than the checksum entries vouch for.
		if res = e.run(t, verify.Config{Incremental: true, Mode: verify.ModeRows}); res.ChunksChecked != full.ChunksChecked {
			t.Fatalf("rows after checksum: %+v", res)
		}
		// New source rows at the top extend the chunk map without moving the existing boundaries.
		e.exec(t, e.src, "INSERT INTO "+harness.SourceTable+" ("+cols+") SELECT id + 100000, version, created, state, grade, max_grade, student_module_id FROM "+
			harness.SourceTable+" WHERE id <= 3000")
		e.exec(t, e.dst, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT id + 100000, version, created, state, grade, max_grade, student_module_id FROM "+
			harness.SourceTable+" WHERE id <= 3000")
		res = e.run(t, verify.Config{Incremental: true})
		if !res.Equal || res.ChunksSkipped != full.ChunksChecked || res.ChunksChecked < 1 {
			t.Fatalf("incremental after growth: %+v", res)
		}
		// A rebuilt (or re-created) target invalidates every entry.
		e.exec(t, e.dst, "ALTER TABLE "+harness.TargetTable+" FORCE")
		res = e.run(t, verify.Config{Incremental: true})
		if !res.Equal || res.ChunksSkipped != 0 {
			t.Fatalf("incremental after rebuilding the target: %+v", res)
		}
	})

	t.Run("application rows at and above the boundary are not extra", func(t *testing.T) {
		var srcMax uint64
		if err := e.src.QueryRow("SELECT MAX(id) FROM " + harness.SourceTable).Scan(&srcMax); err != nil {
			t.Fatal(err)
		}
		boundary := srcMax + 10_000
		e.exec(t, e.dst, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT id - ? + ?, version, created, state, grade, max_grade, student_module_id FROM "+
			harness.SourceTable+" WHERE id BETWEEN ? AND ?", srcMax-50, boundary, srcMax-50, srcMax)
		res := e.run(t, verify.Config{IDBoundary: boundary})
		requireEqual(t, res)
		if res.End >= boundary {
			t.Fatalf("compared up to %d, past the boundary %d", res.End, boundary)
		}
		// An explicit end past the boundary is capped too.
		res = e.run(t, verify.Config{IDBoundary: boundary, EndID: boundary + 1000, Mode: verify.ModeRows})
		requireEqual(t, res)
		if res.End != boundary-1 {
			t.Fatalf("end %d, want %d", res.End, boundary-1)
		}
		// Below the boundary a target row past the source's last id is a copied row that should not be there.
		stray := srcMax + 5
		e.exec(t, e.dst, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT ?, version, created, state, grade, max_grade, student_module_id FROM "+
			harness.SourceTable+" WHERE id = ?", stray, srcMax)
		res = e.run(t, verify.Config{IDBoundary: boundary})
		equalIDs(t, "stray", res.Extra, []uint64{stray})
		e.exec(t, e.dst, "DELETE FROM "+harness.TargetTable+" WHERE id = ?", stray)
	})

	t.Run("differences still in flight are settled by catch-up", func(t *testing.T) {
		id := e.nthID(t, "1", 4242)
		e.exec(t, e.dst, "DELETE FROM "+harness.TargetTable+" WHERE id = ?", id)
		var calls atomic.Int32
		// Stands in for replication: the first wait after the start applies the pending change.
		catchUp := func(ctx context.Context) error {
			if calls.Add(1) == 2 {
				_, err := e.dst.ExecContext(ctx, "INSERT INTO "+harness.TargetTable+" ("+cols+") SELECT "+cols+" FROM "+harness.SourceTable+" WHERE id = ?", id)
				return err
			}
			return nil
		}
		res := e.run(t, verify.Config{CatchUp: catchUp})
		requireEqual(t, res)
		if calls.Load() != 2 {
			t.Fatalf("catch-up called %d times, want at the start and once for the differing chunk", calls.Load())
		}
	})
}

// innerBucket returns the first id of a touch bucket that lies wholly inside the n-th ledger chunk.
func (e *env) innerBucket(t *testing.T, n int) uint64 {
	t.Helper()
	var lo, hi uint64
	if err := e.dst.QueryRow(fmt.Sprintf("SELECT start_id, end_id FROM edxapp_csmh.%s ORDER BY start_id LIMIT 1 OFFSET %d",
		verify.LedgerTable, n)).Scan(&lo, &hi); err != nil {
		t.Fatal(err)
	}
	const size = 1 << verify.TouchBucketBits
	b := (lo + size - 1) / size * size
	if b+size-1 > hi {
		t.Fatalf("chunk %d..%d holds no whole touch bucket", lo, hi)
	}
	return b
}

// copyAcross streams the source rows into the target server in multi-row INSERTs, values as text.
func copyAcross(t *testing.T, src, dst *sql.DB) {
	t.Helper()
	rows, err := src.Query(`SELECT id, version, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f'), state, CAST(grade AS CHAR),
		CAST(max_grade AS CHAR), student_module_id FROM ` + harness.SourceTable + ` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var sb strings.Builder
	flush := func() {
		if sb.Len() > 0 {
			if _, err := dst.Exec(sb.String()); err != nil {
				t.Fatal(err)
			}
			sb.Reset()
		}
	}
	vals := make([]sql.RawBytes, 7)
	ptrs := make([]any, 7)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		if sb.Len() == 0 {
			sb.WriteString("INSERT INTO " + harness.TargetTable + " (" + cols + ") VALUES ")
		} else {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		for i, v := range vals {
			if i > 0 {
				sb.WriteByte(',')
			}
			if v == nil {
				sb.WriteString("NULL")
			} else {
				sqllit.Quote(&sb, v)
			}
		}
		sb.WriteByte(')')
		if sb.Len() > 2<<20 {
			flush()
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
}

// TestVerifyAcrossServersLegacyTarget compares a current source with a 2016-era target on another server
// whose columns are in another order, with int ids, a datetime without fractions and a latin1 version.
func TestVerifyAcrossServersLegacyTarget(t *testing.T) {
	ctx := context.Background()
	e := acrossServers(t, harness.Options{}, harness.SchemaOptions{Legacy2016Target: true})
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, harness.GenOptions{Rows: genRows, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	// Old installs store whole seconds; the source's values carry none, as they would after such a copy.
	e.exec(t, e.src, "UPDATE "+harness.SourceTable+" SET created = DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s')")
	e.exec(t, e.dst, "ALTER TABLE "+harness.TargetTable+" MODIFY created datetime NOT NULL, MODIFY version varchar(255) CHARACTER SET latin1 DEFAULT NULL")
	copyAcross(t, e.src, e.dst)

	for _, m := range []verify.Mode{verify.ModeCount, verify.ModeChecksum, verify.ModeRows} {
		res := e.run(t, verify.Config{Mode: m, Workers: 3})
		requireEqual(t, res)
		if res.RowsChecked != genRows {
			t.Fatalf("%s: %d rows", m, res.RowsChecked)
		}
	}

	// Normalization must not hide real differences, and repair must work across servers.
	gone, changed := e.nthID(t, "1", 777), e.nthID(t, "version IS NOT NULL", 10_000)
	e.exec(t, e.dst, "DELETE FROM "+harness.TargetTable+" WHERE id = ?", gone)
	e.exec(t, e.dst, "UPDATE "+harness.TargetTable+" SET version = CONCAT(version, 'x') WHERE id = ?", changed)
	res := e.run(t, verify.Config{Repair: true})
	equalIDs(t, "missing", res.Missing, []uint64{gone})
	equalIDs(t, "different", res.Different, []uint64{changed})
	if !res.Equal || res.Repaired != 2 {
		t.Fatalf("repair across servers: %+v", res)
	}
	requireEqual(t, e.run(t, verify.Config{Mode: verify.ModeRows}))
	if d, n, err := harness.Diff(ctx, e.src, harness.SourceTable, e.dst, harness.TargetTable, 0, 1<<40); err != nil || n != 0 {
		t.Fatalf("independent diff: %d %v %v", n, d, err)
	}
}

// TestChunksFollowTheDensity plans a first verify of a dense range followed by far outliers (ids up to the int maximum,
// as one mistyped id would put there): the chunks hold about ChunkRows rows each where the rows are dense, the
// empty stretch between takes a handful of chunks rather than one per ChunkRows ids, and every row is
// compared.
func TestChunksFollowTheDensity(t *testing.T) {
	e := sameServer(t)
	outliers := []uint64{1_000_000_000, 2_000_000_000, 2_000_000_001, 2_147_483_000}
	for _, id := range outliers {
		e.exec(t, e.src, fmt.Sprintf("INSERT INTO %s (id, created, state, student_module_id) VALUES (%d, UTC_TIMESTAMP(6), 'x', 1)", harness.SourceTable, id))
		e.exec(t, e.src, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s WHERE id = %d", harness.TargetTable, cols, cols, harness.SourceTable, id))
	}
	res := e.run(t, verify.Config{Mode: verify.ModeChecksum})
	requireEqual(t, res)
	total := genRows + int64(len(outliers))
	if res.RowsChecked != total || res.End != outliers[len(outliers)-1] {
		t.Fatalf("checked %d rows up to id %d, want %d up to %d", res.RowsChecked, res.End, total, outliers[len(outliers)-1])
	}
	rows, err := e.dst.Query("SELECT start_id, end_id, source_count FROM edxapp_csmh." + verify.LedgerTable + " ORDER BY start_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var chunks, dense int
	var sum int64
	for rows.Next() {
		var lo, hi uint64
		var n int64
		if err := rows.Scan(&lo, &hi, &n); err != nil {
			t.Fatal(err)
		}
		chunks++
		sum += n
		if n > 3*chunkRows {
			t.Errorf("chunk %d..%d holds %d rows, want about %d", lo, hi, n, chunkRows)
		}
		if hi <= uint64(e.gen.MaxID) {
			dense++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// The dense rows, at 2,000 a chunk, take 15; the dives may err by half either way.
	if sum != total || dense < genRows/chunkRows/2 || dense > 2*genRows/chunkRows+1 || chunks > dense+40 {
		t.Fatalf("%d chunks (%d over the dense ids) holding %d rows; want about %d over the dense ids and a few over the %d outliers",
			chunks, dense, sum, genRows/chunkRows, len(outliers))
	}
}

// A repair whose target write is held up (here by another session's lock on the target row; a hung target
// does the same) releases its source rows at its deadline: the app's UPDATE of the row being repaired waits
// for the deadline, not for the target (before, it waited for the target's lock wait timeout, 5 s, and again
// at every retry). Once the target lets go, the repair is tried again and lands the app's new value.
func TestRepairReleasesSourceRowsAtItsDeadline(t *testing.T) {
	ctx := context.Background()
	e := acrossServers(t, harness.Options{}, harness.SchemaOptions{})
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, harness.GenOptions{Rows: 5000, Seed: 13}); err != nil {
		t.Fatal(err)
	}
	copyAcross(t, e.src, e.dst)
	id := e.nthID(t, "1", 1234)
	e.exec(t, e.dst, "UPDATE "+harness.TargetTable+" SET grade = COALESCE(grade, 0) + 1 WHERE id = ?", id)

	// Another session holds the target row the repair must replace.
	blocker, err := e.dst.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	if _, err := blocker.ExecContext(ctx, "SELECT id FROM "+harness.TargetTable+" WHERE id = ? FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}

	const deadline = time.Second
	rep := startRepair(t, e, deadline)

	// The repair holds the source row and waits for the target row (its DELETE waits for the row lock).
	harness.Eventually(t, time.Minute, "the repair waiting for the target row", func() (bool, error) {
		rep.running(t, "it waited for the target row")
		var n int
		err := e.dst.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'DELETE FROM%' AND STATE = 'Updating'").Scan(&n)
		return n > 0, err
	})
	start := time.Now()
	e.exec(t, e.src, "UPDATE "+harness.SourceTable+" SET grade = 42 WHERE id = ?", id) // the app
	waited := time.Since(start)
	t.Logf("the app's UPDATE of the row under repair waited %s (deadline %s)", waited.Round(time.Millisecond), deadline)
	if limit := deadline + 1500*time.Millisecond; waited > limit {
		t.Fatalf("the app's UPDATE waited %s for the repair, beyond its deadline %s (limit %s)", waited, deadline, limit)
	}
	harness.Eventually(t, time.Minute, "the repair to log its deadline", func() (bool, error) {
		return strings.Contains(rep.logged.String(), "repair reached its deadline"), nil
	})
	if err := blocker.Rollback(); err != nil {
		t.Fatal(err)
	}
	if res := rep.wait(t); !res.Equal || res.Repaired != 1 {
		t.Fatalf("repair: %+v\n%s", res, rep.logged.String())
	}
	var grade sql.NullFloat64
	if err := e.dst.QueryRow("SELECT grade FROM "+harness.TargetTable+" WHERE id = ?", id).Scan(&grade); err != nil || !grade.Valid || grade.Float64 != 42 {
		t.Fatalf("target grade after the repair: %v %v, want the app's 42", grade, err)
	}
	requireEqual(t, e.run(t, verify.Config{Mode: verify.ModeRows}))
}

// A repair batch whose locking read on the source waits for a row the app holds (y) releases the rows it has
// locked already (x) at its deadline, on the server too: the driver only closes its socket there, and the
// server would keep the read's locks until its lock wait ended (innodb_lock_wait_timeout, 5 s). The app's
// UPDATE of x waits for the deadline, not the lock wait; once the app lets y go, both rows are repaired.
func TestRepairReleasesSourceRowsWhileItWaitsForTheApp(t *testing.T) {
	ctx := context.Background()
	e := acrossServers(t, harness.Options{}, harness.SchemaOptions{})
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, harness.GenOptions{Rows: 5000, Seed: 13}); err != nil {
		t.Fatal(err)
	}
	copyAcross(t, e.src, e.dst)
	x, y := e.nthID(t, "1", 1234), e.nthID(t, "1", 1236)
	e.exec(t, e.dst, "UPDATE "+harness.TargetTable+" SET grade = COALESCE(grade, 0) + 1 WHERE id IN (?, ?)", x, y)

	app, err := e.src.BeginTx(ctx, nil) // the app holds source row y
	if err != nil {
		t.Fatal(err)
	}
	defer app.Rollback()
	if _, err := app.ExecContext(ctx, "SELECT id FROM "+harness.SourceTable+" WHERE id = ? FOR UPDATE", y); err != nil {
		t.Fatal(err)
	}
	const deadline = time.Second
	rep := startRepair(t, e, deadline)

	// The repair's read has locked x and waits for y: a NOWAIT lock of x fails.
	harness.Eventually(t, time.Minute, "the repair's read holding x while it waits for the app's row", func() (bool, error) {
		rep.running(t, "its read waited for the app's row")
		return harness.RowLocked(e.src, harness.SourceTable, x)
	})
	start := time.Now()
	e.exec(t, e.src, "UPDATE "+harness.SourceTable+" SET grade = 42 WHERE id = ?", x) // the app
	waited := time.Since(start)
	t.Logf("the app's UPDATE of a row the repair had locked waited %s (deadline %s)", waited.Round(time.Millisecond), deadline)
	if limit := deadline + 1500*time.Millisecond; waited > limit {
		t.Fatalf("the app's UPDATE waited %s for the repair, beyond its deadline %s (limit %s)", waited, deadline, limit)
	}
	harness.Eventually(t, time.Minute, "the repair to log its deadline", func() (bool, error) {
		return strings.Contains(rep.logged.String(), "repair reached its deadline"), nil
	})
	if err := app.Rollback(); err != nil {
		t.Fatal(err)
	}
	if res := rep.wait(t); !res.Equal || res.Repaired != 2 {
		t.Fatalf("repair: %+v\n%s", res, rep.logged.String())
	}
	requireEqual(t, e.run(t, verify.Config{Mode: verify.ModeRows}))
}

// repairRun is a verify --repair running in the background, with its log.
type repairRun struct {
	done   chan repairOutcome
	logged *harness.SyncBuffer
}

type repairOutcome struct {
	res *verify.Result
	err error
}

// startRepair starts verify --repair with the batch deadline given.
func startRepair(t *testing.T, e *env, deadline time.Duration) *repairRun {
	t.Helper()
	r := &repairRun{done: make(chan repairOutcome, 1), logged: &harness.SyncBuffer{}}
	v, err := verify.New(e.toolSrc, e.toolDst, e.m, slog.New(slog.NewTextHandler(r.logged, nil)), verify.Config{
		SourceTable: srcName, TargetTable: dstName, ChunkRows: chunkRows, Repair: true, RepairDeadline: deadline})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	go func() { res, err := v.Run(ctx); r.done <- repairOutcome{res, err} }()
	return r
}

// running fails the test if the repair has ended before reaching what it was to reach.
func (r *repairRun) running(t *testing.T, before string) {
	t.Helper()
	select {
	case out := <-r.done:
		t.Fatalf("verify ended before %s: %+v %v\n%s", before, out.res, out.err, r.logged.String())
	default:
	}
}

// wait returns the repair's result, failing the test on its error.
func (r *repairRun) wait(t *testing.T) *verify.Result {
	t.Helper()
	out := <-r.done
	if out.err != nil {
		t.Fatalf("verify --repair: %v\n%s", out.err, r.logged.String())
	}
	return out.res
}

// A repair's INSERTs fit the target's max_allowed_packet: on a target that allows 1 MiB (MySQL 5.7's default is
// 4 MiB), a repair of rows of 900 KB among ordinary ones (here every row is missing) copies them all. Before,
// statements of 4 MiB, and a large row appended to others, passed the limit.
func TestRepairFitsTheTargetsPacket(t *testing.T) {
	ctx := context.Background()
	e := acrossServers(t, harness.Options{ExtraArgs: []string{"--max-allowed-packet=1M"}}, harness.SchemaOptions{})
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, harness.GenOptions{Rows: 3000, Seed: 17, LargeStateEvery: -1}); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789", 90_000)
	for _, off := range []int64{350, 1111, 1900, 2600} {
		e.exec(t, e.src, "UPDATE "+harness.SourceTable+" SET state = ? WHERE id >= ? ORDER BY id LIMIT 1", big, e.gen.MinID+off)
	}
	res := e.run(t, verify.Config{Repair: true})
	if !res.Equal || res.MissingTotal != e.gen.Rows || int64(res.Repaired) != e.gen.Rows {
		t.Fatalf("repair of every row: %+v", res)
	}
	requireEqual(t, e.run(t, verify.Config{Mode: verify.ModeRows}))
}
