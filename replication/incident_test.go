package replication_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	binlog "github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// An incident event in the source's binlog (changes the source could not log) stops the stream after the
// transactions before it, naming the event by its binlog position, as a MySQL replica stops (error 1590).
// A restart stops there again; a restart that accepts that very position drops verify's proofs first
// (Config.Unproven) and streams on.
func TestStopsAtIncident(t *testing.T) {
	t.Run("gtid", func(t *testing.T) { stopsAtIncident(t, false) })
	t.Run("file position", func(t *testing.T) { stopsAtIncident(t, true) })
}

func stopsAtIncident(t *testing.T, fileMode bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	exec(t, f.srcDB, "CREATE TABLE edxapp.scratch (id int PRIMARY KEY, v longtext) ENGINE=MyISAM")
	before := f.executed(t)
	// An incident as MariaDB writes one: a statement's changes to a non-transactional table outgrow the
	// statement cache, so they reach neither the binlog nor a rollback.
	exec(t, f.srcDB, "SET GLOBAL max_binlog_stmt_cache_size = 4096")
	db, err := sql.Open("mysql", f.src.DSN("edxapp")) // a session that starts with the small cache
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.Exec("INSERT INTO edxapp.scratch SELECT seq, REPEAT('x', 1000) FROM seq_1_to_100")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1705 {
		t.Fatalf("the statement that outgrows the cache: %v, want error 1705", err)
	}
	incident := incidentPosition(t, f.srcDB)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (2, NOW(6), 7)")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = f.replicator(t, nil).Run(ctx, f.start)
	if !isErr(err, replication.ErrIncident) || !strings.Contains(err.Error(), "LOST_EVENTS at "+incident) ||
		!strings.Contains(err.Error(), "--accept-incident "+incident) || !strings.Contains(err.Error(), "verify --repair") {
		t.Fatalf("Run returned %v; want ErrIncident naming LOST_EVENTS, its position %s and the way on", err, incident)
	}
	want := before.String() // the transaction before the incident (in file mode, where the incident starts)
	if fileMode {
		want = incident
	}
	if got := checkpointGTID(t, f); got != want {
		t.Fatalf("checkpoint %s, want %s", got, want)
	}
	if got := targetIDs(t, f); got != "1" {
		t.Fatalf("target ids %q, want 1: the row after the incident must wait for the operator", got)
	}

	from, err := gtid.Parse("mariadb", want)
	if err != nil {
		t.Fatal(err)
	}
	unproven := 0
	accept := func(pos string) func(*replication.Config) {
		return func(c *replication.Config) {
			c.AcceptIncident = pos
			c.Unproven = func(context.Context) error { unproven++; return nil }
		}
	}
	other := gtid.FilePos{File: strings.SplitN(strings.TrimPrefix(incident, gtid.FilePrefix), ":", 2)[0], Pos: 4}.String()
	if err := f.replicator(t, accept(other)).Run(ctx, from); !isErr(err, replication.ErrIncident) || unproven != 0 {
		t.Fatalf("restart accepting another position: %v, proofs dropped %d times; want the same stop, nothing dropped", err, unproven)
	}
	r := f.replicator(t, accept(incident))
	run := start(t, r, from)
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := targetIDs(t, f); got != "1,2" || unproven != 1 {
		t.Fatalf("after accepting the incident: target ids %q, proofs dropped %d times; want 1,2 and once", got, unproven)
	}
}

// A binlog the source cannot send from a position it holds (here: an event whose length field is damaged,
// what a disk or a copy can do) stops the stream with the server's words and keeps the checkpoint: it is not
// called purged, and starting over is not the remedy. Once the binlog is mended, a restart goes on.
func TestStopsOnUnreadableBinlog(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	file, rowsAt := rowsEventOf(t, f.srcDB, "courseware_studentmodulehistory")
	exec(t, f.srcDB, "FLUSH BINARY LOGS") // the damaged file is closed: nothing writes it again
	path := f.src.DataDir + "/" + file
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	copy(bad[rowsAt+9:rowsAt+13], []byte{5, 0, 0, 0}) // event_length = 5: shorter than a header
	if err := os.WriteFile(path, bad, 0o660); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = f.replicator(t, nil).Run(ctx, f.start)
	if !isErr(err, replication.ErrBinlogRead) || isErr(err, replication.ErrPurged) || !strings.Contains(err.Error(), "bogus data in log event") ||
		!strings.Contains(err.Error(), "the checkpoint is kept") {
		t.Fatalf("Run returned %v; want ErrBinlogRead with the server's message, not purged", err)
	}
	if got := checkpointGTID(t, f); got != f.start.String() {
		t.Fatalf("checkpoint %s, want %s kept", got, f.start)
	}

	if err := os.WriteFile(path, orig, 0o660); err != nil {
		t.Fatal(err)
	}
	r := f.replicator(t, nil)
	run := start(t, r, f.start)
	f.waitCaughtUp(t, r, time.Minute)
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := targetIDs(t, f); got != "1" {
		t.Fatalf("target ids %q after the binlog was mended, want 1", got)
	}
}

// Another binlog reader that connects with the stream's server id makes the source drop the stream (error
// 1236, "A slave with the same server_uuid/server_id is already connected"). The stream stops, naming
// --server-id, with the checkpoint kept: it does not call the binlog damaged, and it does not connect again,
// which would drop the other reader in turn (a real replica of the source, perhaps).
func TestStopsWhenAnotherReplicaTakesTheServerID(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	id := serverID.Add(1)
	r := f.replicator(t, func(c *replication.Config) { c.ServerID = id })
	run := start(t, r, f.start)
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	applied := f.waitCaughtUp(t, r, time.Minute)

	other := binlog.NewBinlogSyncer(binlog.BinlogSyncerConfig{ServerID: id, Flavor: "mariadb", Host: f.src.Host,
		Port: uint16(f.src.Port), User: "root", DisableRetrySync: true})
	defer other.Close()
	files, err := dbconn.BinaryLogs(context.Background(), f.srcDB)
	if err != nil {
		t.Fatal(err)
	}
	events, err := other.StartSync(gomysql.Position{Name: files[0].Name, Pos: 4})
	if err != nil {
		t.Fatal(err)
	}
	err = run.wait(t, time.Minute)
	if !isErr(err, replication.ErrServerIDInUse) || isErr(err, replication.ErrBinlogRead) ||
		!strings.Contains(err.Error(), "already connected") || !strings.Contains(err.Error(), "--server-id") ||
		!strings.Contains(err.Error(), fmt.Sprint(id)) || !strings.Contains(err.Error(), "the checkpoint is kept") {
		t.Fatalf("Run returned %v; want ErrServerIDInUse naming server id %d and --server-id", err, id)
	}
	if got := checkpointGTID(t, f); got != applied.String() {
		t.Fatalf("checkpoint %s, want %s kept", got, applied)
	}
	// The other reader still streams: the row inserted now reaches it.
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (2, NOW(6), 7)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for rows := 0; rows < 2; {
		e, err := events.GetEvent(ctx)
		if err != nil {
			t.Fatalf("the other reader lost its stream after %d rows events: %v", rows, err)
		}
		if _, ok := e.Event.(*binlog.RowsEvent); ok {
			rows++
		}
	}
}

// incidentPosition is the file:binlog:offset of the incident event in the source's binlogs.
func incidentPosition(t *testing.T, db *sql.DB) string {
	t.Helper()
	for _, e := range binlogEvents(t, db) {
		if e.typ == "Incident" {
			return gtid.FilePos{File: e.file, Pos: e.pos}.String()
		}
	}
	t.Fatal("no incident event in the source's binlog")
	return ""
}

// rowsEventOf is where the first rows event of the table lies: its binlog file and offset.
func rowsEventOf(t *testing.T, db *sql.DB, tbl string) (string, uint64) {
	t.Helper()
	events := binlogEvents(t, db)
	for i, e := range events {
		if e.typ == "Table_map" && strings.Contains(e.info, "."+tbl+")") && i+1 < len(events) && strings.Contains(events[i+1].typ, "_rows") {
			return events[i+1].file, events[i+1].pos
		}
	}
	t.Fatalf("no rows event of %s in the source's binlog", tbl)
	return "", 0
}

type binlogEvent struct {
	file, typ, info string
	pos             uint64
}

func binlogEvents(t *testing.T, db *sql.DB) []binlogEvent {
	t.Helper()
	files, err := dbconn.BinaryLogs(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	var out []binlogEvent
	for _, f := range files {
		rows, err := db.Query("SHOW BINLOG EVENTS IN '" + f.Name + "'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var e binlogEvent
			var server, end sql.RawBytes
			if err := rows.Scan(&e.file, &e.pos, &e.typ, &server, &end, &e.info); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return out
}

func targetIDs(t *testing.T, f *fixture) string {
	t.Helper()
	var ids sql.NullString
	if err := f.dstDB.QueryRow("SELECT GROUP_CONCAT(id ORDER BY id) FROM " + harness.TargetTable).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	return ids.String
}

// A binlog file that ends inside a transaction is what a source leaves when it stops while writing one
// (MariaDB keeps the partial group at the end of the file after a crash): the source never committed it, and
// a replica rolls it back ("Rolling back unfinished transaction"). So does the stream: made here by cutting a
// closed binlog file just before a transaction's commit event, that transaction never reaches the target, the
// ones before and after it do, and so it is when its first part was already applied (a transaction in parts).
func TestUnfinishedTransactionAtTheEndOfABinlogIsDropped(t *testing.T) {
	for _, c := range []struct {
		name     string
		fileMode bool
		parts    bool
	}{{"gtid", false, false}, {"file position", true, false}, {"gtid, in parts", false, true}, {"file position, in parts", true, true}} {
		t.Run(c.name, func(t *testing.T) { unfinishedTransactionDropped(t, c.fileMode, c.parts) })
	}
}

func unfinishedTransactionDropped(t *testing.T, fileMode, parts bool) {
	f := newFixture(t, fixtureOptions{fileMode: fileMode})
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (1, NOW(6), 7)")
	// The transaction cut off: two rows, so that in parts its first row is applied before the cut.
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id, state) VALUES (2, NOW(6), 7, REPEAT('a', 3000)), (3, NOW(6), 7, REPEAT('b', 3000))")
	exec(t, f.srcDB, "FLUSH BINARY LOGS")
	exec(t, f.srcDB, "INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (4, NOW(6), 7)")
	events := binlogEvents(t, f.srcDB)
	first := events[0].file
	var cut uint64
	for _, e := range events {
		if e.file == first && e.typ == "Xid" {
			cut = e.pos // the last commit of the first file: the two-row transaction's
		}
	}
	if cut == 0 {
		t.Fatalf("no commit event in %s", first)
	}
	path := f.src.DataDir + "/" + first
	if err := os.Truncate(path, int64(cut)); err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int32 // parts written into the target's open transaction
	r := f.replicator(t, func(c *replication.Config) {
		if parts {
			c.FragmentBytes = 2048 // each row of the cut transaction is a part of its own
			c.Hooks.FragmentApplied = func(string, int) error { applied.Add(1); return nil }
		}
	})
	run := start(t, r, f.start)
	harness.Eventually(t, time.Minute, "row 4 applied", func() (bool, error) {
		var n int
		err := f.dstDB.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable + " WHERE id = 4").Scan(&n)
		return n == 1, err
	})
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := targetIDs(t, f); got != "1,4" {
		t.Fatalf("target ids %q; want 1,4: the transaction its binlog file ends inside is dropped", got)
	}
	st, err := f.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied.Inserts != 2 || st.Applied.Transactions != 2 {
		t.Fatalf("checkpoint counts %+v; want 2 transactions, 2 inserts", st.Applied)
	}
	if parts && applied.Load() == 0 {
		t.Fatal("no part of the cut transaction was applied before the cut: the in-parts path was not exercised")
	}
}
