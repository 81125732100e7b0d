package backfill_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
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

func open(t *testing.T, s *harness.Server) *sql.DB {
	t.Helper()
	db, _, err := dbconn.Open(context.Background(), dbconn.Endpoint{Role: "test", DSN: s.DSN("")}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type env struct {
	src, dst   *sql.DB
	srcS, dstS *harness.Server
	store      *checkpoint.Store
	gen        harness.GenResult
}

func setup(t *testing.T, sameServer bool, gen harness.GenOptions) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{srcS: harness.StartT(t, harness.Options{})}
	e.dstS = e.srcS
	if !sameServer {
		e.dstS = harness.StartT(t, harness.Options{})
		if err := e.srcS.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
			t.Fatal(err)
		}
		if err := e.dstS.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true}); err != nil {
			t.Fatal(err)
		}
	} else if err := e.srcS.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	e.src, e.dst = open(t, e.srcS), open(t, e.dstS)
	var err error
	if e.gen, err = harness.GenerateCSMH(ctx, e.src, harness.SourceTable, gen); err != nil {
		t.Fatal(err)
	}
	e.store = checkpoint.New(e.dst, "edxapp_csmh")
	if err := e.store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) backfill(t *testing.T, cfg backfill.Config) *backfill.Backfill {
	t.Helper()
	cfg.SourceTable, cfg.TargetTable = srcName, dstName
	b, err := backfill.New(e.src, e.dst, e.store, metrics.Discard(), slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) requireEqual(t *testing.T) {
	t.Helper()
	diffs, n, err := harness.Diff(context.Background(), e.src, harness.SourceTable, e.dst, harness.TargetTable, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		t.Fatalf("%d differences, first: %v", n, diffs)
	}
}

func TestCrossServerCopyIsExact(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 50000, Seed: 11, LargeStateEvery: 2000})
	b := e.backfill(t, backfill.Config{Workers: 4})
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.SameServer() {
		t.Fatal("two servers detected as one")
	}
	e.requireEqual(t)
	if p := b.Progress(); !p.Done || p.Copied != e.gen.Rows || p.Ratio() != 1 {
		t.Fatalf("progress %+v, want done with %d rows", p, e.gen.Rows)
	}
}

func TestSameServerCopyIsExact(t *testing.T) {
	e := setup(t, true, harness.GenOptions{Rows: 30000, Seed: 12})
	b := e.backfill(t, backfill.Config{Workers: 2})
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !b.SameServer() {
		t.Fatal("same-server path not chosen")
	}
	e.requireEqual(t)
}

// Cancelling at a chunk boundary and running again resumes from the checkpoint without double counting.
func TestResumeAfterCancel(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 40000, Seed: 13})
	ctx, cancel := context.WithCancel(context.Background())
	chunks := 0
	b := e.backfill(t, backfill.Config{Workers: 2, Hooks: backfill.Hooks{AfterChunkCopied: func(int, uint64) {
		if chunks++; chunks == 3 {
			cancel()
		}
	}}})
	if err := b.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want canceled", err)
	}
	st, err := e.store.Load(context.Background())
	if err != nil && !errors.Is(err, checkpoint.ErrNone) {
		t.Fatal(err)
	}
	_ = st
	if err := e.backfill(t, backfill.Config{Workers: 2}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
	var inTarget, counted int64
	e.dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&inTarget)
	e.dst.QueryRow("SELECT SUM(rows_copied) FROM edxapp_csmh.csmh_sync_backfill").Scan(&counted)
	if inTarget != counted || inTarget != e.gen.Rows {
		t.Fatalf("target has %d rows, checkpoint counts %d, generated %d", inTarget, counted, e.gen.Rows)
	}
}

// Rows of 8–16 MiB copy with a 1 MiB budget: statements split, nothing held beyond one row plus the budget.
func TestLargeRowsWithSmallBudget(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 3000, Seed: 14, LargeStateEvery: -1})
	big := strings.Repeat("abc😀\\'\n", 12<<20/9)
	if _, err := e.src.Exec("UPDATE "+harness.SourceTable+" SET state = ? WHERE id IN (?, ?)", big, e.gen.MinID, e.gen.MinID+1); err != nil {
		t.Fatal(err)
	}
	b := e.backfill(t, backfill.Config{Workers: 1, ChunkBytes: 1 << 20})
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
}

func TestPauseAndRateLimit(t *testing.T) {
	e := setup(t, false, harness.GenOptions{Rows: 5000, Seed: 15})
	b := e.backfill(t, backfill.Config{Workers: 1, MaxRowsPerSecond: 1e9})
	b.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused run returned %v", err)
	}
	if p := b.Progress(); p.Copied != 0 || !p.Paused {
		t.Fatalf("paused backfill copied %d rows", p.Copied)
	}
	b.Resume()
	if err := b.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.requireEqual(t)
}
