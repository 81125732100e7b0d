package backfill

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/internal/sqllit"
)

func TestNextSpan(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		name   string
		ids    uint64
		rows   int64
		bytes  int64
		took   time.Duration
		budget int64
		want   uint64
	}{
		{"quick dense chunk doubles", 1000, 1000, 100_000, 100 * ms, 8 << 20, 2000},
		{"on target and under budget keeps", 1000, 1000, 100_000, 500 * ms, 8 << 20, 1000},
		{"twice the target halves", 1000, 1000, 100_000, 1000 * ms, 8 << 20, 500},
		{"empty sparse range doubles", 1000, 0, 0, 1 * ms, 8 << 20, 2000},
		// The fixed part of a chunk's time (round trips, commits) over the target: shrinking cannot help.
		{"a slow empty range still doubles", 1000, 0, 0, 10 * time.Second, 8 << 20, 2000},
		{"a slow chunk shrinks to 100 rows, not fewer", 1000, 1000, 100_000, 10 * time.Second, 8 << 20, 100},
		{"a slow sparse chunk shrinks to 100 rows", 10_000, 1000, 100_000, 10 * time.Second, 8 << 20, 1000},
		{"a slow chunk of few rows grows towards 100 rows", 1000, 20, 2000, 10 * time.Second, 8 << 20, 2000},
		{"zero duration doubles", 1000, 0, 0, 0, 8 << 20, 2000},
		{"fat rows shrink to the byte budget", 1000, 1000, 4 << 20, 100 * ms, 1 << 20, 250},
		{"fat rows shrink below 100 rows to the byte budget", 100, 100, 100 << 20, 10 * time.Second, 1 << 20, 6},
		{"a very slow chunk shrinks at most 16x", 16000, 16000, 16000, 100 * time.Second, 8 << 20, 1000},
		{"one huge row keeps span 1", 1, 1, 16 << 20, 100 * ms, 1 << 20, 1},
		{"never below 1", 1, 1, 1 << 30, time.Hour, 64 << 10, 1},
		{"never above maxSpan", maxSpan, 0, 0, ms, 8 << 20, maxSpan},
		{"ids zero treated as one", 0, 0, 0, ms, 8 << 20, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := nextSpan(c.ids, c.rows, c.bytes, c.took, 500*ms, c.budget); got != c.want {
				t.Fatalf("nextSpan(%d ids, %d rows, %d B, %s) = %d, want %d", c.ids, c.rows, c.bytes, c.took, got, c.want)
			}
		})
	}
}

func TestSpannerAdapts(t *testing.T) {
	sp := newSpanner(500*time.Millisecond, 1<<20, 1000)
	if span, rc := sp.next(); span != initialSpan || rc != 2*(1<<20)/1000 {
		t.Fatalf("initial span %d, row cap %d", span, rc)
	}
	// Sparse deleted history: empty chunks grow the span geometrically.
	lo := uint64(1)
	for range 10 {
		span, _ := sp.next()
		sp.observe(chunkStats{lo: lo, hi: lo + span - 1, took: time.Millisecond})
		lo += span
	}
	if span, _ := sp.next(); span != initialSpan<<10 {
		t.Fatalf("span after 10 empty chunks = %d", span)
	}
	// Then dense fat rows (100 KB each, one per id): the span falls to the byte budget within a few chunks and
	// the row cap follows the measured row size.
	for range 4 {
		span, _ := sp.next()
		sp.observe(chunkStats{lo: lo, hi: lo + 99, read: 100, bytes: 100 * 100_000, took: 100 * time.Millisecond})
		lo += span
	}
	span, rc := sp.next()
	if span > 11 || span < 10 {
		t.Fatalf("span over 100 KB rows with a 1 MiB budget = %d, want ~10", span)
	}
	if rc > 32 {
		t.Fatalf("row cap %d over 100 KB rows with a 1 MiB budget, want ≤ 32", rc)
	}
	sp.shrink()
	if s, _ := sp.next(); s != span/4 {
		t.Fatalf("shrink: %d → %d", span, s)
	}
}

func TestRowCap(t *testing.T) {
	for _, c := range []struct {
		budget   int64
		rowBytes float64
		want     int64
	}{
		{8 << 20, 1024, 16384}, {8 << 20, 0, maxRowCap}, {64 << 10, 16 << 20, minRowCap}, {1 << 30, 10, 65535},
	} {
		if got := rowCapFor(c.budget, c.rowBytes); got != c.want {
			t.Errorf("rowCapFor(%d, %g) = %d, want %d", c.budget, c.rowBytes, got, c.want)
		}
	}
}

func TestChunkEndAndSplit(t *testing.T) {
	if got := chunkEnd(10, 5, 100); got != 14 {
		t.Fatal(got)
	}
	if got := chunkEnd(98, 5, 100); got != 100 {
		t.Fatal(got)
	}
	if got := chunkEnd(1, 1<<63, 1<<62); got != 1<<62 {
		t.Fatal("overflow not guarded", got)
	}
	for _, c := range []struct {
		lo, hi uint64
		n      int
		want   [][2]uint64
	}{
		{1, 100, 4, [][2]uint64{{1, 25}, {26, 50}, {51, 75}, {76, 100}}},
		{1, 10, 3, [][2]uint64{{1, 4}, {5, 8}, {9, 10}}},
		{5, 6, 4, [][2]uint64{{5, 5}, {6, 6}}},
		{7, 7, 4, [][2]uint64{{7, 7}}},
		{0, 1<<63 - 1, 2, [][2]uint64{{0, 1<<62 - 1}, {1 << 62, 1<<63 - 1}}},
	} {
		got := splitRange(c.lo, c.hi, c.n)
		if len(got) != len(c.want) {
			t.Fatalf("splitRange(%d, %d, %d) = %+v", c.lo, c.hi, c.n, got)
		}
		for i, s := range got {
			if s.ID != i || s.Start != c.want[i][0] || s.End != c.want[i][1] || s.Next != s.Start || s.Done {
				t.Fatalf("splitRange(%d, %d, %d)[%d] = %+v, want %v", c.lo, c.hi, c.n, i, s, c.want[i])
			}
		}
	}
}

func TestStatementBudget(t *testing.T) {
	for _, c := range []struct {
		chunk  int64
		packet int
		want   int
	}{
		{8 << 20, 64 << 20, 2 << 20}, {64 << 20, 64 << 20, 4 << 20}, {64 << 20, 4 << 20, 2 << 20},
		{64 << 10, 64 << 20, 16 << 10}, {1 << 20, 16 << 20, 256 << 10},
	} {
		if got := statementBudget(c.chunk, c.packet); got != c.want {
			t.Errorf("statementBudget(%d, %d) = %d, want %d", c.chunk, c.packet, got, c.want)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(1000)
	l.now = func() time.Time { return now }
	wait := func(l *limiter, n int64) time.Duration { d, _, _ := l.reserve(n); return d }
	if d := wait(l, 1000); d != 0 {
		t.Fatalf("first second of rows waited %s", d)
	}
	if d := wait(l, 500); d != 500*time.Millisecond {
		t.Fatalf("debt of 500 rows at 1000/s waits %s", d)
	}
	now = now.Add(2 * time.Second) // repays the debt, refills to the burst, not beyond
	if d := wait(l, 1000); d != 0 {
		t.Fatalf("after refilling waited %s", d)
	}
	if d := wait(l, 3000); d != 3*time.Second {
		t.Fatalf("a chunk larger than the bucket waits %s, want 3s", d)
	}
	if d := wait(newLimiter(0), 1<<40); d != 0 {
		t.Fatal("unlimited limiter waited")
	}
	tiny := newLimiter(1e-12) // its wait would overflow a time.Duration and turn negative: no limit at all
	tiny.reserve(1)
	if d := wait(tiny, 1000); d != maxRowsWait {
		t.Fatalf("a limit of 1e-12 rows/s waits %s for 1000 rows, want the %s bound", d, maxRowsWait)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l2 := newLimiter(1)
	l2.reserve(1)
	if _, err := l2.take(ctx, 10); err == nil {
		t.Fatal("take ignored a cancelled context")
	}
}

// POST /rate changes the limit of a running copy: a limit set where there was none starts with a full bucket,
// a lower one keeps no more than its own second of rows, and a worker already waiting is let go at the new
// rate at once, not at the end of the wait the old rate gave it.
func TestLimiterRateChange(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(0)
	l.now = func() time.Time { return now }
	wait := func(n int64) time.Duration { d, _, _ := l.reserve(n); return d }
	l.setRate(100)
	if d := wait(100); d != 0 {
		t.Fatalf("a limit set where there was none: its first second of rows waited %s", d)
	}
	if d := wait(50); d != 500*time.Millisecond {
		t.Fatalf("50 rows beyond the bucket at 100/s wait %s, want 500ms", d)
	}
	now = now.Add(10 * time.Second) // the bucket refills to 100 rows
	l.setRate(10)
	if d := wait(20); d != time.Second {
		t.Fatalf("after lowering to 10/s the bucket held more than one second of rows: 20 rows wait %s, want 1s", d)
	}

	for _, to := range []float64{1e9, 0} { // a higher limit, and none
		w := newLimiter(10)
		w.reserve(10) // the bucket is empty: 100 rows now owe 10 s at 10/s
		done := make(chan time.Duration, 1)
		go func() {
			waited, err := w.take(context.Background(), 100)
			if err != nil {
				t.Error(err)
			}
			done <- waited
		}()
		deadline := time.Now().Add(5 * time.Second)
		for { // until the waiter has taken its rows
			w.mu.Lock()
			owed := w.tokens < 0
			w.mu.Unlock()
			if owed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the waiter never reserved its rows")
			}
			time.Sleep(time.Millisecond) // polling interval
		}
		w.setRate(to)
		select {
		case waited := <-done:
			if waited >= 5*time.Second {
				t.Fatalf("rate %g: the waiter waited %s", to, waited)
			}
		case <-time.After(5 * time.Second): // the old rate's wait is 10 s
			t.Fatalf("rate changed to %g: a waiter owing 10 s at the old rate still waits after 5 s", to)
		}
	}
}

// A worker that has waited part of its debt when the rate changes owes the rest at the new rate, counted from
// the change: at 10 rows/s, 100 rows owe 10 s; raised to 20 rows/s after 4 s, the 60 rows still owed take 3 s
// more, 7 s in all (not 4 s already waited plus 3 s from the change, counted again from the change). On a fake
// clock and fake timers, so the test reads each wait the limiter asks for.
func TestLimiterRateChangeCountsTheWaitOnce(t *testing.T) {
	var clock atomic.Int64 // ns since the epoch
	l := newLimiter(10)
	l.now = func() time.Time { return time.Unix(0, clock.Load()) }
	type timer struct {
		d    time.Duration
		fire chan time.Time
	}
	timers := make(chan timer, 4)
	l.timer = func(d time.Duration) (<-chan time.Time, func() bool) {
		tm := timer{d, make(chan time.Time, 1)}
		timers <- tm
		return tm.fire, func() bool { return true }
	}
	l.reserve(10) // the bucket is empty
	done := make(chan time.Duration, 1)
	go func() {
		waited, err := l.take(context.Background(), 100)
		if err != nil {
			t.Error(err)
		}
		done <- waited
	}()
	next := func() timer {
		select {
		case tm := <-timers:
			return tm
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter asked for no timer")
			return timer{}
		}
	}
	if tm := next(); tm.d != 10*time.Second {
		t.Fatalf("100 rows at 10/s wait %s, want 10s", tm.d)
	}
	clock.Add(int64(4 * time.Second))
	l.setRate(20)
	tm := next()
	if tm.d != 3*time.Second {
		t.Fatalf("after 4 s of 10 s at 10/s, raised to 20/s: the waiter waits %s more, want 3s", tm.d)
	}
	clock.Add(int64(3 * time.Second))
	tm.fire <- l.now()
	select {
	case waited := <-done:
		if waited != 7*time.Second {
			t.Fatalf("the waiter reports %s waited, want 7s", waited)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not return when its timer fired")
	}
}

func TestAppendRow(t *testing.T) {
	vals := func(v ...any) []sql.RawBytes {
		out := make([]sql.RawBytes, len(v))
		for i, x := range v {
			if x != nil {
				out[i] = sql.RawBytes(x.(string))
			}
		}
		return out
	}
	for _, c := range []struct {
		name  string
		vals  []sql.RawBytes
		kinds []sqllit.Kind
		want  string
	}{
		{"numbers as sent", vals("42", "0.30000000000000004", "-1e-300", "18446744073709551615"),
			[]sqllit.Kind{sqllit.Number, sqllit.Number, sqllit.Number, sqllit.Number}, "(42,0.30000000000000004,-1e-300,18446744073709551615)"},
		{"NULL vs empty string", vals(nil, ""), []sqllit.Kind{sqllit.String, sqllit.String}, "(NULL,'')"},
		{"NULL number", vals(nil), []sqllit.Kind{sqllit.Number}, "(NULL)"},
		{"quotes and backslashes", vals(`it's "x" \ y`), []sqllit.Kind{sqllit.String}, `('it\'s "x" \\ y')`},
		{"control bytes", vals("a\x00b\nc\rd\x1ae"), []sqllit.Kind{sqllit.String}, `('a\0b\nc\rd\Ze')`},
		{"utf8mb4 untouched", vals("😀 日本 é"), []sqllit.Kind{sqllit.String}, "('😀 日本 é')"},
		{"invalid utf8 bytes untouched", vals("\xff\xfe\x80"), []sqllit.Kind{sqllit.String}, "('\xff\xfe\x80')"},
		{"datetime", vals("2020-01-02 03:04:05.123456"), []sqllit.Kind{sqllit.String}, "('2020-01-02 03:04:05.123456')"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var sb strings.Builder
			sqllit.Row(&sb, c.vals, c.kinds)
			if sb.String() != c.want {
				t.Fatalf("got %q, want %q", sb.String(), c.want)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	for typ, want := range map[string]sqllit.Kind{"INT": sqllit.Number, "UNSIGNED BIGINT": sqllit.Number, "DOUBLE": sqllit.Number,
		"DECIMAL": sqllit.Number, "double": sqllit.Number, "VARCHAR": sqllit.String, "DATETIME": sqllit.String, "BLOB": sqllit.Binary,
		"TEXT": sqllit.String, "BIT": sqllit.Binary, "": sqllit.String} {
		if got := sqllit.KindOf(typ); got != want {
			t.Errorf("kindOf(%q) = %v, want %v", typ, got, want)
		}
	}
}

// unquote reads a literal the way the server does without NO_BACKSLASH_ESCAPES.
func unquote(t *testing.T, s string) []byte {
	if len(s) < 2 || s[0] != '\'' || s[len(s)-1] != '\'' {
		t.Fatalf("not a quoted literal: %q", s)
	}
	in := s[1 : len(s)-1]
	var out bytes.Buffer
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == '\'' {
			t.Fatalf("unescaped quote at %d in %q", i, s)
		}
		if c != '\\' {
			out.WriteByte(c)
			continue
		}
		i++
		if i == len(in) {
			t.Fatalf("dangling backslash in %q", s)
		}
		switch in[i] {
		case '0':
			out.WriteByte(0)
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 'Z':
			out.WriteByte(0x1a)
		case 't':
			out.WriteByte('\t')
		case 'b':
			out.WriteByte('\b')
		default: // \\ \' \" and any other escaped byte stand for themselves
			out.WriteByte(in[i])
		}
	}
	return out.Bytes()
}

func FuzzEscapeRoundTrip(f *testing.F) {
	for _, s := range []string{"", "'", `\`, "\x00\n\r\x1a", `\'`, "'\\''", "😀", "\xff\x00\xfe", "abc\\"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		var sb strings.Builder
		sqllit.Row(&sb, []sql.RawBytes{v}, []sqllit.Kind{sqllit.String})
		lit := sb.String()
		if got := unquote(t, lit[1:len(lit)-1]); !bytes.Equal(got, v) {
			t.Fatalf("%q → %s → %q", v, lit, got)
		}
	})
}

func TestAcceptableWarning(t *testing.T) {
	for _, c := range []struct {
		level, msg  string
		code        int
		otherUnique bool
		want        bool
	}{
		{"Warning", "Duplicate entry '5' for key 'PRIMARY'", 1062, false, true},
		{"Warning", "Duplicate entry '5' for key 't.PRIMARY'", 1062, true, true},
		{"Warning", "Duplicate entry 'x' for key 'uk'", 1062, true, false},
		{"Warning", "Out of range value for column 'v' at row 2", 1264, false, false},
		{"Warning", "Data truncated for column 'v' at row 1", 1265, false, false},
		{"Note", "Data truncated for column 'created' at row 1", 1265, false, true},
	} {
		if got := acceptableWarning(c.level, c.code, c.msg, c.otherUnique); got != c.want {
			t.Errorf("acceptableWarning(%s %d %q, other unique %v) = %v", c.level, c.code, c.msg, c.otherUnique, got)
		}
	}
}

func TestBarLineAndEstimate(t *testing.T) {
	p := Progress{Planned: true, Copied: 1_234_567, IDsDone: 452, IDsTotal: 1000, RowsPerSec: 41_200.7}
	p.Total, p.ETA = estimate(p, 0)
	if p.Total != 2_731_342 {
		t.Fatalf("total %d", p.Total)
	}
	if want := "[=============>                ]  45.2%  1,234,567/2,731,342 rows  41,200 rows/s  ETA 36s"; barLine(p) != want {
		t.Fatalf("bar\n got %q\nwant %q", barLine(p), want)
	}
	// Before any chunk: the table's estimate, capped by the id span.
	if total, eta := estimate(Progress{IDsTotal: 1000}, 800); total != 800 || eta != -1 {
		t.Fatalf("early estimate %d %s", total, eta)
	}
	if total, _ := estimate(Progress{IDsTotal: 1000}, 5000); total != 1000 {
		t.Fatalf("estimate above the id span: %d", total)
	}
	done := Progress{Planned: true, Done: true, Copied: 7, IDsTotal: 10}
	done.Total, done.ETA = estimate(done, 0)
	if done.Total != 7 || done.ETA != 0 || !strings.HasPrefix(barLine(done), "[==============================] 100.0%  7/7 rows") {
		t.Fatalf("done: %q", barLine(done))
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestRateWindow(t *testing.T) {
	r := newRateWindow(30 * time.Second)
	t0 := time.Unix(1000, 0)
	r.add(t0, 0)
	for i := 1; i <= 60; i++ {
		r.add(t0.Add(time.Duration(i)*time.Second), 100)
	}
	if got := r.perSecond(t0.Add(60 * time.Second)); got < 99 || got > 101 {
		t.Fatalf("rate %g, want ~100", got)
	}
	if len(r.samples) > 32 {
		t.Fatalf("window keeps %d samples", len(r.samples))
	}
}

func TestReporter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run reports once more when ctx ends, then returns
	get := func() Progress {
		return Progress{Planned: true, IDsTotal: 10, IDsDone: 5, Copied: 5, Total: 10, RowsPerSec: 2, ETA: 3 * time.Second}
	}
	var tty bytes.Buffer
	NewReporter(&tty, true, slog.New(slog.DiscardHandler), time.Second).Run(ctx, get)
	if got := tty.String(); !strings.HasPrefix(got, "\r[===============>              ]  50.0%  5/10 rows  2 rows/s  ETA 3s") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("terminal output %q", got)
	}
	var logs bytes.Buffer
	NewReporter(nil, false, slog.New(slog.NewTextHandler(&logs, nil)), time.Second).Run(ctx, get)
	for _, want := range []string{"backfill progress", "rows=5", "total=10", "pct=50.0", "rows_per_sec=2", "eta=3s"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("log line %q lacks %q", logs.String(), want)
		}
	}
	var none bytes.Buffer
	NewReporter(&none, true, slog.New(slog.DiscardHandler), time.Second).Run(ctx, func() Progress { return Progress{} })
	if none.String() != "\n" {
		t.Fatalf("an unplanned copy drew %q", none.String())
	}
}

// The split point is the row median, found by bisecting the id range with row estimates: with 100,000 dense
// ids and one outlier at 2,000,000,000 the upper half starts near id 50,000, not near 1,000,000,000 where
// halving the ids would put it (and leave every row in the lower half).
func TestMedianSplitsRowsNotIds(t *testing.T) {
	ids := make([]uint64, 0, 100_001)
	for i := uint64(1); i <= 100_000; i++ {
		ids = append(ids, i)
	}
	ids = append(ids, 2_000_000_000)
	calls := 0
	// InnoDB's estimate: exact here, but never above half the table's rows (btr_estimate_n_rows_in_range).
	b := &Backfill{estimator: func(_ context.Context, lo, hi uint64) (int64, error) {
		calls++
		i, _ := slices.BinarySearch(ids, lo)
		j, _ := slices.BinarySearch(ids, hi+1)
		return min(int64(j-i), int64(len(ids))/2), nil
	}}
	for _, c := range []struct {
		lo, hi  uint64
		rows    int64
		atLeast uint64
		atMost  uint64
	}{
		{1, 2_000_000_000, 100_001, 49_999, 50_003},
		{60_001, 2_000_000_000, 40_001, 80_000, 80_003},
		{1, 100_000, 100_000, 49_999, 50_002},
		{1, 500_000_000, 100_000, 49_999, 50_002},
	} {
		calls = 0
		at, err := b.median(context.Background(), c.lo, c.hi)
		if err != nil || at < c.atLeast || at > c.atMost {
			t.Errorf("median of [%d, %d] = %d, %v; want within [%d, %d]", c.lo, c.hi, at, err, c.atLeast, c.atMost)
		}
		if calls > 64 {
			t.Errorf("median of [%d, %d] took %d estimates, want at most 64", c.lo, c.hi, calls)
		}
		// The rows of a range above the cap are counted as the sum of ranges under it.
		if n, err := b.rowsIn(context.Background(), c.lo, c.hi); err != nil || n != c.rows {
			t.Errorf("rows in [%d, %d]: %d, %v; want %d", c.lo, c.hi, n, err, c.rows)
		}
	}
}

// An explicit --start-id or --end-id beyond an existing plan adds exactly the ids the plan leaves out.
func TestExtendRanges(t *testing.T) {
	plan := []checkpoint.Segment{{ID: 0, Start: 100, End: 149}, {ID: 1, Start: 150, End: 199}}
	empty := []checkpoint.Segment{{ID: 0, Start: 1, End: 0, Done: true}}
	for _, c := range []struct {
		have   []checkpoint.Segment
		lo, hi uint64
		want   [][2]uint64
	}{
		{plan, 0, 0, nil},
		{plan, 100, 199, nil},
		{plan, 120, 150, nil},
		{plan, 1, 0, [][2]uint64{{1, 99}}},
		{plan, 0, 500, [][2]uint64{{200, 500}}},
		{plan, 7, 500, [][2]uint64{{7, 99}, {200, 500}}},
		{empty, 5, 9, [][2]uint64{{5, 9}}},
		{empty, 0, 9, nil},
	} {
		got := extendRanges(c.have, c.lo, c.hi)
		if !slices.Equal(got, c.want) {
			t.Errorf("extendRanges(%v, %d, %d) = %v, want %v", c.have, c.lo, c.hi, got, c.want)
		}
	}
}

// A chunk is planned within its segment and below a split being committed; one that starts at the split point
// waits for the split's outcome: the segment's new end (nothing left to plan) or, had the split failed, the
// old one. Every plan raises the worker's reach, which a split stays above.
func TestPlanChunkStaysBelowASplit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &Backfill{segs: map[int]checkpoint.Segment{0: {ID: 0, Start: 1, Next: 1, End: 10_000}}}
		w := &worker{seg: b.segs[0]}
		ctx := context.Background()
		if hi, ok, err := b.planChunk(ctx, w, 0, 1, 1000); hi != 1000 || !ok || err != nil || w.reach != 1000 {
			t.Fatalf("no split: chunk to %d, %v, %v, reach %d; want 1000, true, nil, 1000", hi, ok, err, w.reach)
		}
		p := &pendingSplit{seg: 0, at: 1500, done: make(chan struct{})}
		b.splitting = p
		if hi, ok, err := b.planChunk(ctx, w, 0, 1001, 1000); hi != 1499 || !ok || err != nil {
			t.Fatalf("split pending at 1500: chunk to %d, %v, %v; want 1499, true, nil", hi, ok, err)
		}
		if w.reach != 1499 {
			t.Fatalf("reach %d, want 1499", w.reach)
		}
		if hi, _, err := b.planChunk(ctx, &worker{}, 1, 1, 1000); hi != 1000 || err != nil { // another segment's split holds no other
			t.Fatalf("segment 1 beside segment 0's split: chunk to %d, %v; want 1000", hi, err)
		}

		type plan struct {
			hi uint64
			ok bool
		}
		got := make(chan plan, 1)
		waitFor := func(lo uint64) {
			go func() {
				hi, ok, _ := b.planChunk(ctx, w, 0, lo, 1000)
				got <- plan{hi, ok}
			}()
			synctest.Wait() // the planner is blocked, or has returned
			select {
			case g := <-got:
				t.Fatalf("a chunk from the split point was planned (%+v) before the split's outcome", g)
			default:
			}
		}
		resolve := func(end uint64) {
			b.mu.Lock()
			s := b.segs[0]
			s.End = end
			b.segs[0] = s
			b.splitting = nil
			b.mu.Unlock()
			close(p.done)
		}
		waitFor(1500)
		resolve(1499) // the split commits: the segment ends below the point
		if g := <-got; g.ok {
			t.Fatalf("after the split a chunk from 1500 was planned to %d, want none", g.hi)
		}

		// A split that fails leaves the old end: the chunk waiting for it is planned as if there had been none.
		b.segs[0] = checkpoint.Segment{ID: 0, Start: 1, Next: 1500, End: 10_000}
		p = &pendingSplit{seg: 0, at: 1500, done: make(chan struct{})}
		b.splitting = p
		waitFor(1500)
		resolve(10_000)
		if g := <-got; g.hi != 2499 || !g.ok {
			t.Fatalf("after a failed split: %+v, want a chunk to 2499", g)
		}

		cctx, cancel := context.WithCancel(ctx) // a wait ends with the copy
		b.splitting = &pendingSplit{seg: 0, at: 1500, done: make(chan struct{})}
		cancel()
		if _, _, err := b.planChunk(cctx, w, 0, 1500, 1000); err == nil {
			t.Fatal("a cancelled wait for a split returned no error")
		}
	})
}

// An idle worker does not split a segment whose worker has planned every row left, and does not split at all
// while an earlier split's outcome is unknown: the busy worker may be waiting for that outcome, which the
// claim's retry reads from the checkpoint first.
func TestSplitRefusals(t *testing.T) {
	ids := func(_ context.Context, lo, hi uint64) (int64, error) { // ids 1–100,000, every one a row
		lo, hi = max(lo, 1), min(hi, 100_000)
		if lo > hi {
			return 0, nil
		}
		return min(int64(hi-lo+1), 50_000), nil
	}
	busy := &worker{reach: 100_000}
	b := &Backfill{estimator: ids, segs: map[int]checkpoint.Segment{0: {ID: 0, Start: 1, End: 100_000, Next: 1}},
		active: map[int]*worker{0: busy}, est: map[int]segEstimate{}}
	if _, ok, err := b.split(context.Background(), newSpanner(time.Second, 1<<20, 100)); ok || err != nil || b.splitting != nil {
		t.Fatalf("a segment whose chunks in flight hold every row left: split %v, %v, pending %v; want none", ok, err, b.splitting)
	}

	busy.reach = 1000
	left := &pendingSplit{seg: 0, at: 70_000, done: make(chan struct{})}
	b.splitting = left
	_, ok, err := b.split(context.Background(), newSpanner(time.Second, 1<<20, 100))
	if ok || !errors.Is(err, errSplitUnresolved) {
		t.Fatalf("split beside an unresolved one: %v, %v; want errSplitUnresolved", ok, err)
	}
	select {
	case <-left.done:
		t.Fatal("the unresolved split was ended without reading the checkpoint")
	default:
	}
	if b.splitting != left {
		t.Fatal("the unresolved split was replaced: a worker waiting for it would wait forever")
	}
}
