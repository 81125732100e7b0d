package verify

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/table"
)

// sliceCursor is a cursor over an in-memory id-ordered table.
type sliceCursor struct {
	ids  []uint64
	vals map[uint64]string
	i    int
}

func (c *sliceCursor) next() (uint64, []byte, bool, error) {
	if c.i >= len(c.ids) {
		return 0, nil, false, nil
	}
	id := c.ids[c.i]
	c.i++
	return id, []byte(c.vals[id]), true, nil
}

func cursorOf(m map[uint64]string) *sliceCursor {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return &sliceCursor{ids: ids, vals: m}
}

// expected computes the differences of two maps directly.
func expected(src, dst map[uint64]string) []diff {
	var out []diff
	for id, v := range src {
		if w, ok := dst[id]; !ok {
			out = append(out, diff{id, missing})
		} else if w != v {
			out = append(out, diff{id, different})
		}
	}
	for id := range dst {
		if _, ok := src[id]; !ok {
			out = append(out, diff{id, extra})
		}
	}
	slices.SortFunc(out, func(a, b diff) int { return int(a.id) - int(b.id) })
	return out
}

func TestMerge(t *testing.T) {
	for _, c := range []struct {
		name     string
		src, dst map[uint64]string
	}{
		{"both empty", map[uint64]string{}, map[uint64]string{}},
		{"target empty", map[uint64]string{1: "a", 5: "b"}, map[uint64]string{}},
		{"source empty", map[uint64]string{}, map[uint64]string{2: "a"}},
		{"equal", map[uint64]string{1: "a", 2: "b", 9: ""}, map[uint64]string{1: "a", 2: "b", 9: ""}},
		{"all kinds", map[uint64]string{1: "a", 2: "b", 4: "d", 7: "g", 10: "x"}, map[uint64]string{2: "B", 3: "c", 4: "d", 8: "h", 10: "x", 11: "y"}},
		{"interleaved", map[uint64]string{1: "", 3: "", 5: ""}, map[uint64]string{2: "", 4: "", 6: ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []diff
			if _, err := merge(cursorOf(c.src), cursorOf(c.dst), func(d diff) error { got = append(got, d); return nil }); err != nil {
				t.Fatal(err)
			}
			if want := expected(c.src, c.dst); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

// TestMergeStopResume stops after every difference and resumes after the returned id, as rows mode does.
func TestMergeStopResume(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	src, dst := randomPair(r, 500)
	var got []diff
	from := uint64(0)
	for {
		sub := func(m map[uint64]string) map[uint64]string {
			out := map[uint64]string{}
			for id, v := range m {
				if id >= from {
					out[id] = v
				}
			}
			return out
		}
		last, err := merge(cursorOf(sub(src)), cursorOf(sub(dst)), func(d diff) error { got = append(got, d); return errStop })
		if errors.Is(err, errStop) {
			from = last + 1
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if want := expected(src, dst); !slices.Equal(got, want) {
		t.Fatalf("got %d diffs, want %d", len(got), len(want))
	}
}

func randomPair(r *rand.Rand, n int) (src, dst map[uint64]string) {
	src, dst = map[uint64]string{}, map[uint64]string{}
	id := uint64(1)
	for range n {
		id += 1 + uint64(r.IntN(5))
		v := fmt.Sprint(r.IntN(1000))
		switch p := r.IntN(100); {
		case p < 3:
			src[id] = v
		case p < 5:
			dst[id] = v
		case p < 8:
			src[id], dst[id] = v, v+"'"
		default:
			src[id], dst[id] = v, v
		}
	}
	return src, dst
}

// fakeSummer aggregates in-memory tables the way the servers do: a count and an XOR of row hashes.
type fakeSummer struct {
	src, dst     map[uint64]string
	sumCalls     int
	leafCalls    int
	maxLeafRows  int
	leafOverflow bool
}

func hash64(id uint64, v string) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range []byte(fmt.Sprintf("%d#%s", id, v)) {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h
}

func aggregate(m map[uint64]string, lo, hi uint64) sums {
	var s sums
	for id, v := range m {
		if id >= lo && id <= hi {
			s.n++
			s.h ^= hash64(id, v)
		}
	}
	return s
}

func (f *fakeSummer) sums(_ context.Context, lo, hi uint64) (sums, sums, error) {
	f.sumCalls++
	return aggregate(f.src, lo, hi), aggregate(f.dst, lo, hi), nil
}

func (f *fakeSummer) leaf(_ context.Context, lo, hi uint64) ([]diff, error) {
	f.leafCalls++
	sub := func(m map[uint64]string) map[uint64]string {
		out := map[uint64]string{}
		for id, v := range m {
			if id >= lo && id <= hi {
				out[id] = v
			}
		}
		return out
	}
	s, d := sub(f.src), sub(f.dst)
	f.maxLeafRows = max(f.maxLeafRows, len(s), len(d))
	limit := leafRows
	if min(len(s), len(d)) == 0 {
		limit = oneSidedLeafRows
	}
	if lo != hi && max(len(s), len(d)) > limit {
		f.leafOverflow = true
	}
	var out []diff
	_, err := merge(cursorOf(s), cursorOf(d), func(x diff) error { out = append(out, x); return nil })
	return out, err
}

func TestBisect(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		name   string
		rows   int
		mutate func(src, dst map[uint64]string)
	}{
		{"equal", 5000, func(src, dst map[uint64]string) {}},
		{"one different", 5000, func(src, dst map[uint64]string) { dst[2500] += "x" }},
		{"missing, extra, different far apart", 20000, func(src, dst map[uint64]string) {
			delete(dst, 3)
			dst[19999] += "y"
			dst[30000] = "extra past the source's end"
			delete(dst, 11111)
		}},
		{"same count, swapped rows", 3000, func(src, dst map[uint64]string) {
			// One missing and one extra in the same range keep the count: the hash still tells.
			delete(dst, 1000)
			dst[100_000] = "moved"
		}},
		{"target lost a whole block", 5000, func(src, dst map[uint64]string) {
			for id := uint64(1000); id < 1700; id++ {
				delete(dst, id)
			}
		}},
		{"random", 8000, func(src, dst map[uint64]string) {
			for range 40 {
				id := uint64(1 + r.IntN(8000))
				switch r.IntN(3) {
				case 0:
					delete(dst, id)
				case 1:
					dst[id] += "z"
				default:
					dst[id+50_000] = "new"
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, dst := map[uint64]string{}, map[uint64]string{}
			for id := uint64(1); id <= uint64(c.rows); id++ {
				src[id] = fmt.Sprint(id * 7)
				dst[id] = src[id]
			}
			c.mutate(src, dst)
			f := &fakeSummer{src: src, dst: dst}
			lo, hi := uint64(1), uint64(200_000)
			s, d, _ := f.sums(context.Background(), lo, hi)
			var got []diff
			err := bisect(context.Background(), f, lo, hi, s, d, func(ds []diff) error { got = append(got, ds...); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if want := expected(src, dst); !slices.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
			if f.leafOverflow {
				t.Fatalf("a leaf listed %d rows, more than %d", f.maxLeafRows, leafRows)
			}
			t.Logf("%d diffs: %d aggregate queries, %d leaf listings", len(got), f.sumCalls, f.leafCalls)
		})
	}
}

func col(name, dataType, charset string) table.Column {
	return table.Column{Name: name, DataType: dataType, Charset: charset}
}

func TestNormalizeIgnoresWidthPrecisionCharsetAndOrder(t *testing.T) {
	src := &table.Table{Name: table.Name{Schema: "a", Table: "s"}, Columns: []table.Column{
		col("id", "int", ""), col("version", "varchar", "utf8mb3"), col("created", "datetime", ""),
		col("state", "longtext", "utf8mb4"), col("grade", "double", ""), col("student_module_id", "int", ""),
	}}
	dst := &table.Table{Name: table.Name{Schema: "b", Table: "t"}, Columns: []table.Column{
		col("version", "varchar", "utf8mb4"), col("created", "datetime", ""), col("state", "longtext", "utf8"),
		col("grade", "double", ""), col("ID", "bigint", ""), col("student_module_id", "bigint", ""), col("extra", "int", ""),
	}}
	pairs, only, err := pairColumns(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(only, []string{"extra"}) {
		t.Fatalf("target-only columns %v", only)
	}
	s, d := newSides(src, dst, nil, nil, pairs, digestCRC)
	// Identical text except for the id column's spelling and the table names: same order, same normalization.
	if strings.ReplaceAll(d.hash, "`ID`", "`id`") != s.hash || strings.ReplaceAll(d.fields, "`ID`", "`id`") != s.fields ||
		strings.ReplaceAll(strings.ReplaceAll(d.sum, "`ID`", "`id`"), "`b`.`t`", "`a`.`s`") != s.sum {
		t.Fatalf("expressions differ:\n%s\n%s\n%s\n%s", s.hash, d.hash, s.sum, d.sum)
	}
	for _, want := range []string{"DATE_FORMAT(`created`, '%Y-%m-%d %H:%i:%s.%f')", "MD5(`state`)", "CAST(`grade` AS CHAR)", "ISNULL(`version`)"} {
		if !strings.Contains(s.hash, want) {
			t.Errorf("hash expression lacks %s: %s", want, s.hash)
		}
	}
	if i, j := strings.Index(s.hash, "`created`"), strings.Index(s.hash, "`version`"); i > j {
		t.Errorf("columns not in name order: %s", s.hash)
	}
	latin := &table.Table{Name: dst.Name, Columns: []table.Column{col("id", "bigint", ""), col("v", "varchar", "latin1")}}
	if got := hashValue(latin.Columns[1]); got != "MD5(CONVERT(`v` USING utf8mb4))" {
		t.Errorf("latin1 string: %s", got)
	}
	if _, _, err := pairColumns(dst, src); !errors.Is(err, ErrSchema) {
		t.Errorf("a source column missing in the target: %v", err)
	}
}

type recordingExec struct{ q []string }

func (r *recordingExec) ExecContext(_ context.Context, q string, _ ...any) (sql.Result, error) {
	r.q = append(r.q, q)
	return nil, nil
}

func TestMarkTouchedOneStatementSortedBuckets(t *testing.T) {
	var e recordingExec
	if err := MarkTouched(context.Background(), &e, "edxapp_csmh", []uint64{5000, 1, 2, 1023, 1024, 4096}); err != nil {
		t.Fatal(err)
	}
	if len(e.q) != 1 {
		t.Fatalf("%d statements", len(e.q))
	}
	if !strings.Contains(e.q[0], "VALUES (0,1,UTC_TIMESTAMP(6)),(1,1,UTC_TIMESTAMP(6)),(4,1,UTC_TIMESTAMP(6))") ||
		!strings.Contains(e.q[0], "`edxapp_csmh`.`"+TouchTable+"`") {
		t.Fatalf("statement: %s", e.q[0])
	}
	if err := MarkTouched(context.Background(), &e, "x", nil); err != nil || len(e.q) != 1 {
		t.Fatalf("no ids must not write: %v %d", err, len(e.q))
	}
}

func TestVouches(t *testing.T) {
	row := &ledgerRow{equal: true, mode: ModeChecksum, touches: 7, scope: "s"}
	for _, c := range []struct {
		row     *ledgerRow
		mode    Mode
		scope   string
		touches uint64
		want    bool
	}{
		{row, ModeChecksum, "s", 7, true},
		{row, ModeCount, "s", 7, true},
		{row, ModeRows, "s", 7, false},
		{row, ModeChecksum, "s", 8, false},
		{row, ModeChecksum, "t", 7, false},
		{&ledgerRow{equal: false, mode: ModeRows, touches: 7, scope: "s"}, ModeCount, "s", 7, false},
		{nil, ModeCount, "s", 0, false},
	} {
		if got := c.row.vouches(c.mode, c.scope, c.touches); got != c.want {
			t.Errorf("%+v vouches(%s, %d) = %v", c.row, c.mode, c.touches, got)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	n := func(s string) table.Name { x, _ := table.ParseName(s); return x }
	ok := Config{SourceTable: n("a.s"), TargetTable: n("b.t")}
	if err := ok.validate(); err != nil || ok.Mode != ModeChecksum || ok.ChunkRows != DefaultChunkRows || ok.Workers != DefaultWorkers {
		t.Fatalf("defaults: %v %+v", err, ok)
	}
	for _, bad := range []Config{
		{TargetTable: n("b.t")},
		{SourceTable: n("a.s"), TargetTable: n("a.s")},
		{SourceTable: n("a.s"), TargetTable: n("b.t"), Mode: "fast"},
		{SourceTable: n("a.s"), TargetTable: n("b.t"), Mode: ModeCount, Repair: true},
		{SourceTable: n("a.s"), TargetTable: n("b.t"), StartID: 10, EndID: 5},
		{SourceTable: n("a.s"), TargetTable: n("b.t"), StartID: 100, IDBoundary: 100},
		{SourceTable: n("a.s"), TargetTable: n("b.t"), ChunkRows: -1},
	} {
		if err := bad.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	r := &Result{Mode: ModeChecksum, Start: 1, End: 100, ChunksChecked: 3, Missing: []uint64{4}, MissingTotal: 1,
		DifferentChunks: []Range{{Start: 1, End: 50, SourceCount: 10, TargetCount: 9}}}
	r.Print(&b)
	for _, want := range []string{"DIFFERENT", "missing: 4", "ids 1..50: source 10 rows, target 9 rows"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// A repair batch the stream raced (a duplicate key on its INSERT) is done again, like a lock wait; any other
// duplicate-key error is not retried.
func TestRetryRepairRaced(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dup := &mysql.MySQLError{Number: 1062, Message: "Duplicate entry '1235' for key 'PRIMARY'"}
	calls := 0
	err := retry(context.Background(), log, func() error {
		if calls++; calls == 1 {
			return fmt.Errorf("%w: %v", errRepairRaced, dup)
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("retry of a raced batch: %v after %d calls; want success on the second", err, calls)
	}
	calls = 0
	if err := retry(context.Background(), log, func() error { calls++; return dup }); err == nil || calls != 1 {
		t.Fatalf("a bare duplicate key: %v after %d calls; want it returned at once", err, calls)
	}
}
