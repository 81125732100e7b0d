package backfill_test

import (
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// One outlier id far above 40,000 dense rows puts every dense row in the first of four equal id spans. The
// three workers whose spans are empty do not stop: each splits the busiest segment at its row median and
// copies the upper half, so the rows end up shared between the workers, and progress counts rows, not ids
// (by ids it would read 75 % while nearly nothing is copied). The first segment's worker is held after its
// first chunk until the other three have split, so the test does not depend on which worker is faster.
func TestIdleWorkersSplitTheBusiestSegment(t *testing.T) {
	for _, same := range []bool{false, true} {
		name := map[bool]string{false: "cross server", true: "same server"}[same]
		t.Run(name, func(t *testing.T) { idleWorkersSplit(t, same) })
	}
}

func idleWorkersSplit(t *testing.T, same bool) {
	e := setup(t, same, harness.GenOptions{Rows: 40_000, Seed: 61})
	if _, err := e.src.Exec("INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES (2000000000, UTC_TIMESTAMP(6), '{}', 1)"); err != nil {
		t.Fatal(err)
	}
	rows := e.gen.Rows + 1
	var (
		once     sync.Once
		held     = make(chan struct{})
		release  = make(chan struct{})
		b        *backfill.Backfill
		atHold   backfill.Progress
		holdErrs = make(chan string, 1)
	)
	b = e.backfill(t, backfill.Config{Workers: 4, ChunkTime: 20 * time.Millisecond, Hooks: backfill.Hooks{
		AfterChunkCopied: func(segment int, next uint64) {
			if segment != 0 {
				return
			}
			once.Do(func() {
				close(held)
				select {
				case <-release:
				case <-time.After(2 * time.Minute):
					holdErrs <- "the other workers never split segment 0"
				}
			})
		}}})
	ctx := ctxT(t, 10*time.Minute) // a bound, not a pace: under -race on a loaded machine this copy has run at 1k rows/s
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-held
	harness.Eventually(t, 3*time.Minute, "three splits by the idle workers", func() (bool, error) {
		return metricValue(t, e.m.SegmentSplits) >= 3, nil
	})
	atHold = b.Progress()
	t.Logf("progress at the hold: %+v", atHold)
	close(release)
	if err := <-done; err != nil {
		if ctx.Err() != nil {
			t.Logf("goroutines at the deadline:\n%s", harness.Goroutines())
		}
		t.Fatal(err)
	}
	select {
	case msg := <-holdErrs:
		t.Fatal(msg)
	default:
	}
	e.requireEqual(t)
	e.requireCounted(t, rows)

	// Progress while segment 0 was held: by rows. The ids below the segments' next ids were then over 75 % of
	// the range (three empty spans), the rows copied a small part.
	if atHold.Copied >= rows/2 {
		t.Fatalf("progress at the hold: %d of %d rows copied; the test needs segment 0 held early", atHold.Copied, rows)
	}
	if atHold.Total < rows/2 || atHold.Total > rows*2 {
		t.Errorf("estimated total %d at the hold, want near the %d rows", atHold.Total, rows)
	}
	if r, want := atHold.Ratio(), float64(atHold.Copied)/float64(rows); r > want+0.25 {
		t.Errorf("progress ratio %.2f at the hold with %d of %d rows copied: counted by ids, not rows", r, atHold.Copied, rows)
	}
	p := b.Progress()
	if !p.Done || p.Copied != rows || p.Ratio() != 1 {
		t.Fatalf("final progress %+v, want done with %d rows", p, rows)
	}

	// The rows were shared: no segment copied half of them (without splits segment 0 copies them all), and
	// at least four segments copied a part each.
	q, err := e.dst.Query("SELECT segment, rows_copied, start_id, end_id, done FROM edxapp_csmh.csmh_sync_backfill ORDER BY segment")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var seg0, sharing, segs int64 // seg0: the most rows one segment copied
	var lastEnd uint64
	type span struct{ start, end uint64 }
	var spans []span
	for q.Next() {
		var id, n int64
		var s, en uint64
		var d bool
		if err := q.Scan(&id, &n, &s, &en, &d); err != nil {
			t.Fatal(err)
		}
		segs++
		t.Logf("segment %d [%d, %d]: %d rows", id, s, en, n)
		seg0 = max(seg0, n) // the largest share: segment 0's without splits
		if n >= rows/20 {
			sharing++
		}
		if !d {
			t.Errorf("segment %d [%d, %d] not done", id, s, en)
		}
		spans = append(spans, span{s, en})
		lastEnd = max(lastEnd, en)
	}
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	if seg0 >= rows/2 || sharing < 4 {
		t.Fatalf("one segment copied %d of %d rows, %d of %d segments copied 5 %% or more: the work was not shared", seg0, rows, sharing, segs)
	}
	// The segments still cover the range exactly once.
	covered := uint64(0)
	for _, s := range spans {
		covered += s.end - s.start + 1
	}
	if covered != 2_000_000_000 || lastEnd != 2_000_000_000 {
		t.Fatalf("segments cover %d ids up to %d, want ids 1 to 2,000,000,000 once each", covered, lastEnd)
	}
}
