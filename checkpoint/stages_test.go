package checkpoint_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// startStore starts a server and returns root's connection to it and a checkpoint store in edxapp_csmh, with
// its tables.
func startStore(t *testing.T) (*sql.DB, *checkpoint.Store) {
	t.Helper()
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{})
	if err := s.Exec(ctx, "CREATE DATABASE edxapp_csmh"); err != nil {
		t.Fatal(err)
	}
	db, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := checkpoint.New(db, "edxapp_csmh")
	if err := store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	return db, store
}

// refuse is a fence whose lock is held by someone else.
type refuse struct{}

func (refuse) Epoch() uint64 { return 1 }
func (refuse) Check(context.Context, checkpoint.Execer, uint64) error {
	return checkpoint.ErrFenced
}

// A stage's stop is recorded beside the checkpoint, read back with it, replaced by the next stop of the same
// stage and cleared when the stage runs again; a checkpoint from before the stop record (no table) reads as
// "nothing stopped"; a writer without the lock records nothing; a new migration starts with no stops.
func TestStageStops(t *testing.T) {
	ctx := context.Background()
	db, store := startStore(t)
	first := checkpoint.State{SourceTable: "edxapp.a", TargetTable: "edxapp_csmh.b", Flavor: "mariadb", GTID: "0-1-5", IDBoundary: 100}
	if _, err := store.Init(ctx, first); err != nil {
		t.Fatal(err)
	}

	// A checkpoint written by a build without the record.
	if _, err := db.Exec("DROP TABLE edxapp_csmh." + checkpoint.StagesTable); err != nil {
		t.Fatal(err)
	}
	if st, err := store.Load(ctx); err != nil || len(st.Stops) != 0 {
		t.Fatalf("Load without the stages table: %v, stops %+v; want none", err, st)
	}
	if err := store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}

	at := time.Date(2026, 12, 3, 10, 4, 5, 123456000, time.UTC)
	for _, st := range []checkpoint.StageStop{
		{Stage: checkpoint.StageBackfill, Reason: "replica", Message: "first", At: at.Add(-time.Hour)},
		{Stage: checkpoint.StageStream, Reason: "ddl", Message: "source table changed by DDL", At: at},
		{Stage: checkpoint.StageBackfill, Reason: "critical_load", Message: "Threads_running 17 > 8 ✓", At: at},
	} {
		if err := store.SaveStageStop(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []checkpoint.StageStop{
		{Stage: checkpoint.StageBackfill, Reason: "critical_load", Message: "Threads_running 17 > 8 ✓", At: at},
		{Stage: checkpoint.StageStream, Reason: "ddl", Message: "source table changed by DDL", At: at},
	}
	if len(st.Stops) != len(want) {
		t.Fatalf("stops %+v, want %+v", st.Stops, want)
	}
	for i := range want {
		if g := st.Stops[i]; g.Stage != want[i].Stage || g.Reason != want[i].Reason || g.Message != want[i].Message || !g.At.Equal(want[i].At) {
			t.Errorf("stop %d = %+v, want %+v", i, g, want[i])
		}
	}

	// A message longer than the record holds is cut at a character boundary.
	long := strings.Repeat("é", 1500)
	if err := store.SaveStageStop(ctx, checkpoint.StageStop{Stage: checkpoint.StageStream, Reason: "error", Message: long}); err != nil {
		t.Fatal(err)
	}
	stops, err := store.StageStops(ctx)
	if err != nil || len(stops) != 2 || !strings.HasPrefix(long, stops[1].Message) || len(stops[1].Message) < 1900 || len(stops[1].Message) > 2000 {
		t.Fatalf("long message stored as %d bytes (%v)", len(stops[1].Message), err)
	}

	if err := store.ClearStageStop(ctx, checkpoint.StageBackfill); err != nil {
		t.Fatal(err)
	}
	if stops, err := store.StageStops(ctx); err != nil || len(stops) != 1 || stops[0].Stage != checkpoint.StageStream {
		t.Fatalf("after clearing the backfill's stop: %+v %v; want the stream's alone", stops, err)
	}

	// Without the migration lock nothing is written.
	store.SetFence(refuse{})
	if err := store.SaveStageStop(ctx, checkpoint.StageStop{Stage: checkpoint.StageBackfill, Reason: "error", Message: "x"}); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("fenced SaveStageStop = %v, want ErrFenced", err)
	}
	if err := store.ClearStageStop(ctx, checkpoint.StageStream); !errors.Is(err, checkpoint.ErrFenced) {
		t.Fatalf("fenced ClearStageStop = %v, want ErrFenced", err)
	}
	if stops, err := store.StageStops(ctx); err != nil || len(stops) != 1 || stops[0].Stage != checkpoint.StageStream {
		t.Fatalf("after fenced writes: %+v %v; want the stream's stop alone, unchanged", stops, err)
	}

	// Starting over (the state row dropped): the new checkpoint has no stops of the old migration.
	if _, err := db.Exec("DELETE FROM edxapp_csmh." + checkpoint.StateTable); err != nil {
		t.Fatal(err)
	}
	if st, err := checkpoint.New(db, "edxapp_csmh").Init(ctx, first); err != nil || len(st.Stops) != 0 {
		var n int
		_ = db.QueryRow("SELECT COUNT(*) FROM edxapp_csmh." + checkpoint.StagesTable).Scan(&n)
		t.Fatalf("new checkpoint: %v, stops %+v (%d rows); want none", err, st, n)
	}
}
