package replication_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

var (
	srcTable = mustName(harness.SourceTable)
	dstTable = mustName(harness.TargetTable)
	serverID atomic.Uint32
)

func init() { serverID.Store(9000) }

func mustName(s string) table.Name {
	n, err := table.ParseName(s)
	if err != nil {
		panic(err)
	}
	return n
}

// fixture is a source and a target server with the edX schema, pinned connections like production's, and a
// checkpoint initialised at the source's position before any test write.
type fixture struct {
	src, dst     *harness.Server
	srcDB, dstDB *sql.DB // root's, for the test's own writes and checks
	// toolSrcDB and toolDstDB are the replicator's, as the harness's SourceUser and TargetUser.
	toolSrcDB, toolDstDB *sql.DB
	srcCfg               *mysql.Config
	store                *checkpoint.Store
	start                *gtid.Set
	fileMode             bool
	m                    *metrics.Metrics
	log                  *slog.Logger
}

type fixtureOptions struct {
	srcArgs    []string
	idBoundary uint64
	fileMode   bool // the checkpoint follows the source by binlog file and offset
}

func newFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{
		src:      harness.StartT(t, harness.Options{ExtraArgs: o.srcArgs}),
		dst:      harness.StartT(t, harness.Options{}),
		m:        metrics.New(prometheus.NewRegistry()),
		fileMode: o.fileMode,
		log:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if err := f.src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	if err := f.dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true}); err != nil {
		t.Fatal(err)
	}
	var err error
	f.srcDB, _, err = dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: f.src.DSN("")}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.srcDB.Close() })
	f.dstDB, _, err = dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: f.dst.DSN("")}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.dstDB.Close() })
	// The replicator and the checkpoint connect as the harness's users, holding exactly the documented grants;
	// the test's own writes and checks go through root's pools above.
	f.toolSrcDB, f.srcCfg, err = dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: f.src.SourceDSN()}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.toolSrcDB.Close() })
	f.toolDstDB, _, err = dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: f.dst.TargetDSN()}, dbconn.Options{MaxOpenConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.toolDstDB.Close() })
	f.store = checkpoint.New(f.toolDstDB, dstTable.Schema)
	if err := f.store.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	f.start = f.executed(t)
	if _, err := f.store.Init(ctx, checkpoint.State{SourceTable: srcTable.String(), TargetTable: dstTable.String(),
		Flavor: "mariadb", SourceServer: "1", GTID: f.start.String(), IDBoundary: o.idBoundary}); err != nil {
		t.Fatal(err)
	}
	return f
}

// testWriter sends the replicator's log to the test log, so a failure shows what the stream did.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// executed is what the source has written: its GTIDs, or in file mode its current binlog file and offset.
func (f *fixture) executed(t *testing.T) *gtid.Set {
	t.Helper()
	s, err := dbconn.ExecutedGTID(context.Background(), f.srcDB, dbconn.MariaDB)
	if f.fileMode {
		var file string
		var off uint64
		file, off, err = dbconn.CurrentBinlogPos(context.Background(), f.srcDB)
		s = gtid.FilePos{File: file, Pos: off}.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	g, err := gtid.Parse("mariadb", s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (f *fixture) replicator(t *testing.T, tweak func(*replication.Config)) *replication.Replicator {
	t.Helper()
	cfg := replication.Config{Source: f.srcCfg, ServerID: serverID.Add(1), Flavor: "mariadb",
		SourceTable: srcTable, TargetTable: dstTable, Heartbeat: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := replication.New(f.toolSrcDB, f.toolDstDB, f.store, f.m, f.log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// running is a Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, r *replication.Replicator, from *gtid.Set) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- r.Run(ctx, from) }()
	t.Cleanup(func() { cancel(); <-g.done; g.done <- nil })
	return g
}

// stop cancels the run and returns what Run returned.
func (g *running) stop(t *testing.T) error {
	t.Helper()
	g.cancel()
	return g.wait(t, time.Minute)
}

// wait returns what Run returned, failing the test if it does not return in time.
func (g *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-g.done:
		g.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s", within)
		return nil
	}
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.120s: %v", q, err)
	}
}

// waitCaughtUp waits until the replicator's committed position contains everything the source executed.
func (f *fixture) waitCaughtUp(t *testing.T, r *replication.Replicator, within time.Duration) *gtid.Set {
	t.Helper()
	target := f.executed(t)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := r.WaitFor(ctx, target); err != nil {
		t.Fatalf("catch up: %v", err)
	}
	return target
}

// rowsQuery selects every column by name, in id order, as text: the same value prints the same on both sides
// whatever the column order and integer widths; created with all six fractional digits.
const rowsQuery = `SELECT CAST(id AS CHAR), version, DATE_FORMAT(created, '%%Y-%%m-%%d %%H:%%i:%%s.%%f'), state,
	CAST(grade AS CHAR), CAST(max_grade AS CHAR), CAST(student_module_id AS CHAR) FROM %s ORDER BY id`

type row [7]sql.NullString

func readRows(t *testing.T, db *sql.DB, tbl table.Name) []row {
	t.Helper()
	rs, err := db.Query(fmt.Sprintf(rowsQuery, tbl.Quoted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameRows compares source and target row by row, every column, and reports the first differences.
func (f *fixture) sameRows(t *testing.T) int {
	t.Helper()
	a, b := readRows(t, f.srcDB, srcTable), readRows(t, f.dstDB, dstTable)
	var diffs []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || (i < len(a) && a[i][0].String != b[j][0].String && less(a[i][0].String, b[j][0].String)):
			diffs = append(diffs, "id "+a[i][0].String+" missing in target")
			i++
		case i >= len(a) || a[i][0].String != b[j][0].String:
			diffs = append(diffs, "id "+b[j][0].String+" extra in target")
			j++
		default:
			for c := range a[i] {
				if a[i][c] != b[j][c] {
					diffs = append(diffs, fmt.Sprintf("id %s column %d: source %.80q (valid %v), target %.80q (valid %v)",
						a[i][0].String, c, a[i][c].String, a[i][c].Valid, b[j][c].String, b[j][c].Valid))
					break
				}
			}
			i++
			j++
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("%d differences between source (%d rows) and target (%d rows); first: %s",
			len(diffs), len(a), len(b), strings.Join(diffs[:min(len(diffs), 10)], "; "))
	}
	return len(a)
}

func less(x, y string) bool { return len(x) < len(y) || (len(x) == len(y) && x < y) }

// checkpointGTID is the checkpoint's stream position; in file mode without the file's creation time, as the
// source's SHOW BINARY LOG STATUS gives positions (checkpointPos has it).
func checkpointGTID(t *testing.T, f *fixture) string {
	t.Helper()
	return withoutCreated(checkpointPos(t, f))
}

// withoutCreated drops a file position's creation time.
func withoutCreated(s string) string {
	if p, err := gtid.ParseFilePos(s); err == nil && gtid.IsFilePos(s) {
		p.Created = 0
		return p.String()
	}
	return s
}

// checkpointPos is the checkpoint's stream position as stored.
func checkpointPos(t *testing.T, f *fixture) string {
	t.Helper()
	st, err := f.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.GTID
}

func isErr(err, target error) bool { return err != nil && errors.Is(err, target) }

// value reads a gauge or counter.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// gtidAt is MariaDB's GTID position at a file position (BINLOG_GTID_POS), or pos itself in GTID mode: what
// counts the transactions between two file positions.
func (f *fixture) gtidAt(t *testing.T, pos *gtid.Set) *gtid.Set {
	t.Helper()
	p, ok := pos.FilePos()
	if !ok {
		return pos
	}
	var s string
	if err := f.srcDB.QueryRow("SELECT BINLOG_GTID_POS(?, ?)", p.File, p.Pos).Scan(&s); err != nil {
		t.Fatalf("BINLOG_GTID_POS(%s): %v", p, err)
	}
	g, err := gtid.Parse("mariadb", s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
