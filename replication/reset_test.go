package replication_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// A file position names a binlog file and an offset on one server, and RESET MASTER makes the source write a
// new file of the same name from offset 4. A restart whose checkpoint lies in the old file stops with
// ErrDiverged before it streams anything from the new one, even once the new file has grown past the
// checkpoint's offset (where the stream would otherwise begin in the middle of other events, or skip every
// change written before that offset). A restart in the same file, before the reset, streams on.
func TestFilePositionAfterResetMaster(t *testing.T) {
	f := newFixture(t, fixtureOptions{fileMode: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	insert := func(from, to int) {
		for i := from; i <= to; i++ {
			exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (?, NOW(6), 7)", i)
		}
	}
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	insert(1, 10)
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	cp, err := gtid.ParseFilePos(checkpointPos(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if cp.Created == 0 {
		t.Fatalf("checkpoint %s does not hold its binlog file's creation time", cp)
	}

	// A restart inside the same file (the server sends the file's Format_description event first) streams on.
	insert(11, 20)
	r = f.replicator(t, nil)
	run = start(t, r, f.start)
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := targetIDs(t, f); got != "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20" {
		t.Fatalf("target ids %q after a restart in the same file", got)
	}
	cp, err = gtid.ParseFilePos(checkpointPos(t, f))
	if err != nil {
		t.Fatal(err)
	}

	// The reset comes in a later second than the file's creation, as it would on a live source.
	harness.Eventually(t, 10*time.Second, "a second after the binlog's creation", func() (bool, error) {
		return time.Now().Unix() > int64(cp.Created), nil
	})
	exec(t, f.srcDB, "RESET MASTER")
	next := 21
	for {
		file, pos, err := dbconn.CurrentBinlogPos(ctx, f.srcDB)
		if err != nil {
			t.Fatal(err)
		}
		if file != cp.File {
			t.Fatalf("after RESET MASTER the source writes %s, not %s again: the test needs the same name", file, cp.File)
		}
		if pos > cp.Pos+1000 {
			break
		}
		insert(next, next)
		next++
	}
	err = f.replicator(t, nil).Run(ctx, f.start)
	if !isErr(err, replication.ErrDiverged) || !strings.Contains(err.Error(), "RESET MASTER") || !strings.Contains(err.Error(), cp.File) {
		t.Fatalf("Run after RESET MASTER returned %v; want ErrDiverged naming the reset and %s", err, cp.File)
	}
	if got := checkpointPos(t, f); got != cp.String() {
		t.Fatalf("checkpoint %s, want %s kept", got, cp)
	}
	if got := targetIDs(t, f); got != "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20" {
		t.Fatalf("target ids %q after the refused restart, want 1..20 only", got)
	}
}

// RESET MASTER on a live source. By file position the dump thread waits at the old offset, silent until the
// new binlog.000001 grows past it, and the stream would seem caught up all the while (its position compares as
// at or after the source's); by GTID the source hands out the GTIDs the stream has applied again. The probe
// sees the source behind the stream and the stream stops with ErrDiverged, the checkpoint kept (by file
// position, while the new file is still shorter than the stream's offset).
func TestStreamStopsWhenTheSourceResetsItsBinlog(t *testing.T) {
	t.Run("file position", func(t *testing.T) { streamStopsAtReset(t, true) })
	t.Run("gtid", func(t *testing.T) { streamStopsAtReset(t, false) })
}

func streamStopsAtReset(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	for i := 1; i <= 20; i++ {
		exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (?, NOW(6), 7)", i)
	}
	f.waitCaughtUp(t, r, time.Minute)
	cp := checkpointPos(t, f)
	exec(t, f.srcDB, "RESET MASTER")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (21, NOW(6), 7)")
	err := run.wait(t, time.Minute)
	if !isErr(err, replication.ErrDiverged) || !strings.Contains(err.Error(), "RESET MASTER") {
		t.Fatalf("Run after RESET MASTER returned %v; want ErrDiverged naming the reset", err)
	}
	if got := checkpointPos(t, f); got != cp {
		t.Fatalf("checkpoint %s, want %s kept", got, cp)
	}
	if !fileMode {
		return
	}
	ctx := context.Background()
	if _, pos, err := dbconn.CurrentBinlogPos(ctx, f.srcDB); err != nil || pos >= mustFilePos(t, cp).Pos {
		t.Fatalf("the new binlog reached offset %d (%v): the test needs it shorter than the stream's %s", pos, err, cp)
	}
}

func mustFilePos(t *testing.T, s string) gtid.FilePos {
	t.Helper()
	p, err := gtid.ParseFilePos(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
