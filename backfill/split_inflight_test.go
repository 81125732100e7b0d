package backfill_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// An idle worker splits a busy segment above the chunk its worker has in flight, never inside it. Inside, the
// new segment's first statement would wait for the chunk's uncommitted rows; at innodb_autoinc_lock_mode 1
// (MariaDB's default) on one server it waits holding CSMHE's AUTO-INC lock, and every app insert into CSMHE
// waits behind it, while the busy chunk waits for the turn (oneBulk) that statement holds: only the chunk
// deadline ended it. Here the busy worker's chunk is held once its rows are written (before its checkpoint
// write and commit), covering more than half of the rows its segment has left (where a split at the row median
// would land inside it), while the other worker, its own segment nearly empty, splits. The tool's lock waits
// are long, so a wait on the held chunk would last as long as the hold: the new segment must copy rows, and an
// app INSERT into CSMHE must complete, while the chunk is held.
func TestSplitLandsAboveChunkInFlight(t *testing.T) {
	for _, same := range []bool{true, false} {
		name := map[bool]string{false: "cross server", true: "same server"}[same]
		t.Run(name, func(t *testing.T) { splitLandsAboveChunkInFlight(t, same) })
	}
}

func splitLandsAboveChunkInFlight(t *testing.T, same bool) {
	// Ids 1–80,000 dense, then 2,000 rows 1,000 ids apart from 100,000, and one outlier id: the second of two
	// equal id spans holds that one row, and its worker is soon idle. Segment 0's chunks double in span (the
	// chunk time is out of the way) until one covers most of the dense rows left, leaving the sparse rows above
	// it, and above the chunk a cross-server worker reads next, to share.
	e := setup(t, same, harness.GenOptions{Rows: 80_000, Seed: 67, GapEvery: -1, LargeStateEvery: -1})
	ctx := ctxT(t, 10*time.Minute)
	var vals []string
	for i := range 2000 {
		vals = append(vals, fmt.Sprintf("(%d, UTC_TIMESTAMP(6), '{}', %d)", 100_000+1000*i, i))
	}
	vals = append(vals, "(2000000000, UTC_TIMESTAMP(6), '{}', 1)")
	if _, err := e.src.Exec("INSERT INTO " + harness.SourceTable + " (id, created, state, student_module_id) VALUES " + strings.Join(vals, ",")); err != nil {
		t.Fatal(err)
	}
	rows := e.gen.Rows + int64(len(vals))
	if _, err := e.dst.Exec("ALTER TABLE "+harness.TargetTable+" AUTO_INCREMENT = ?", uint64(2000000000)+10000); err != nil {
		t.Fatal(err)
	}
	long := func(dsn string) *sql.DB { // lock waits as long as the test: a wait on the held chunk lasts the hold
		return openDSNWith(t, dsn, dbconn.Options{LockWaitTimeout: 10 * time.Minute})
	}
	e.toolSrc, e.toolDst = long(e.srcS.SourceDSN()), long(e.dstS.TargetDSN())

	var (
		mu             sync.Mutex
		heldLo, heldHi uint64
		holding        bool
		held           = make(chan struct{})
		release        = make(chan struct{})
		hookErrs       = make(chan error, 4)
		releaseOnce    sync.Once
		releaseAll     = func() { releaseOnce.Do(func() { close(release) }) }
	)
	defer releaseAll()
	hooks := backfill.Hooks{
		AfterChunkWritten: func(segment int, lo, hi uint64) {
			mu.Lock()
			taken := holding
			mu.Unlock()
			if segment != 0 || taken {
				return
			}
			// Rows of segment 0 left, those in the chunk, and those above the chunk after it (of the same span).
			var in, left, above int64
			err := e.src.QueryRow("SELECT COALESCE(SUM(id <= ?), 0), COUNT(*), COALESCE(SUM(id > ?), 0) FROM "+harness.SourceTable+
				" WHERE id BETWEEN ? AND 1999999999", hi, hi+(hi-lo+1), lo).Scan(&in, &left, &above)
			if err != nil {
				hookErrs <- err
				return
			}
			// Well past the row median (the split needs 10,000 rows left, estimated), with rows above to share.
			if in*10 < left*6 || left < 12_000 || above < 1000 {
				return
			}
			mu.Lock()
			holding, heldLo, heldHi = true, lo, hi
			mu.Unlock()
			t.Logf("holding segment 0's chunk %d–%d, written, before its checkpoint and commit: %d of the %d rows left, %d above it", lo, hi, in, left, above)
			close(held)
			select {
			case <-release:
			case <-time.After(5 * time.Minute):
				hookErrs <- fmt.Errorf("segment 0's chunk was held for 5 min")
			}
		},
		AfterChunkCopied: func(segment int, next uint64) {
			if segment != 1 {
				return
			}
			select { // the idle worker splits only once segment 0's chunk is held
			case <-held:
			case <-time.After(3 * time.Minute):
				select {
				case hookErrs <- fmt.Errorf("segment 0 never planned a chunk past the median of its rows"):
				default:
				}
			}
		},
	}
	b := e.backfill(t, backfill.Config{Workers: 2, ChunkTime: time.Minute, ChunkDeadline: 10 * time.Minute,
		ChunkBytes: 64 << 20, Hooks: hooks})
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-held:
	case err := <-hookErrs:
		t.Fatal(err)
	case err := <-done:
		t.Fatalf("the backfill ended before segment 0's chunk was held: %v", err)
	}
	harness.Eventually(t, 2*time.Minute, "the idle worker's split", func() (bool, error) {
		return metricValue(t, e.m.SegmentSplits) >= 1, nil
	})
	mu.Lock()
	lo, hi := heldLo, heldHi
	mu.Unlock()

	// The new segment starts above the held chunk, and copies while it is held.
	var minStart uint64
	if err := e.dst.QueryRow("SELECT COALESCE(MIN(start_id), 0) FROM edxapp_csmh.csmh_sync_backfill WHERE segment > 1").Scan(&minStart); err != nil {
		t.Fatal(err)
	}
	if minStart <= hi {
		t.Errorf("the split landed at id %d, inside the held chunk %d–%d", minStart, lo, hi)
	}
	harness.Eventually(t, time.Minute, "rows above the held chunk copied while it is held", func() (bool, error) {
		var n int64
		err := e.dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id > ? AND id < 2000000000", hi).Scan(&n)
		return n > 0, err
	})

	// The app's insert into CSMHE, while the chunk is held.
	app, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := e.dst.ExecContext(app, "INSERT INTO "+harness.TargetTable+" (created, state, student_module_id) VALUES (UTC_TIMESTAMP(6), '{}', 7)")
	if err != nil {
		t.Fatalf("the app's INSERT into CSMHE did not complete while the chunk was held (%s): %v", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("app INSERT took %s while segment 0's chunk was held", time.Since(start).Round(time.Microsecond))
	appID, err := res.LastInsertId()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("the backfill ended while its chunk was held: %v", err)
	default:
	}

	releaseAll()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-hookErrs:
		t.Fatal(err)
	default:
	}
	if _, err := e.dst.Exec("DELETE FROM "+harness.TargetTable+" WHERE id = ?", appID); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	e.requireCounted(t, rows)
	if n := metricValue(t, e.m.ChunkDeadlines); n != 0 {
		t.Errorf("%v chunks reached their deadline", n)
	}
}
