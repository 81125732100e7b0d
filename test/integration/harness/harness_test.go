package harness

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func open(t *testing.T, s *Server, db string) *sql.DB {
	t.Helper()
	h, err := s.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n sql.NullInt64
	if err := db.QueryRowContext(t.Context(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n.Int64
}

// TestServerBinlogDataAndLoad checks one server end to end: binlog settings, GTIDs, schema, generated data,
// live load, graceful restart and crash restart.
func TestServerBinlogDataAndLoad(t *testing.T) {
	ctx := t.Context()
	s := StartT(t, Options{})
	db := open(t, s, "")
	var logBin int
	var format, image string
	if err := db.QueryRowContext(ctx, "SELECT @@log_bin, @@binlog_format, @@binlog_row_image").Scan(&logBin, &format, &image); err != nil {
		t.Fatal(err)
	}
	if logBin != 1 || format != "ROW" || image != "FULL" {
		t.Fatalf("binlog settings: log_bin=%d format=%s image=%s", logBin, format, image)
	}
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	var gtid string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil || gtid == "" {
		t.Fatalf("gtid_binlog_pos after DDL %q: %v", gtid, err)
	}

	const rows = 20000
	res, err := GenerateCSMH(ctx, db, SourceTable, GenOptions{Rows: rows, Seed: 1, LargeStateEvery: 4000})
	if err != nil {
		t.Fatal(err)
	}
	var n, minID, maxID, nulls, wide, empty, versions, micros, large int64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(id), MAX(id), SUM(state IS NULL),
		SUM(state <> CONVERT(state USING utf8mb3)), SUM(state = '{}'), SUM(version IS NOT NULL),
		SUM(MICROSECOND(created) > 0), SUM(LENGTH(state) >= 65536) FROM `+SourceTable).
		Scan(&n, &minID, &maxID, &nulls, &wide, &empty, &versions, &micros, &large); err != nil {
		t.Fatal(err)
	}
	if n != rows || res.Rows != rows || minID != res.MinID || maxID != res.MaxID || maxID <= n {
		t.Fatalf("rows %d ids %d..%d, generator said %+v (want gaps: max id > count)", n, minID, maxID, res)
	}
	if nulls == 0 || wide == 0 || empty == 0 || large == 0 || micros < rows/2 {
		t.Fatalf("want NULL, '{}', 4-byte UTF-8 and large states and microseconds: nulls=%d wide=%d empty=%d large=%d micros=%d",
			nulls, wide, empty, large, micros)
	}
	if versions == 0 || versions > rows/2 {
		t.Fatalf("version should be mostly NULL but present: %d of %d set", versions, n)
	}
	if got := count(t, db, "SELECT MIN(YEAR(created)) * 10000 + MAX(YEAR(created)) FROM "+SourceTable); got/10000 != 2013 || got%10000 < 2025 {
		t.Fatalf("created years span %d–%d, want 2013–2026", got/10000, got%10000)
	}
	if ai := count(t, db, "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'edxapp' AND TABLE_NAME = 'courseware_studentmodulehistory'"); ai != maxID+1 {
		t.Fatalf("AUTO_INCREMENT %d, want %d", ai, maxID+1)
	}

	// Live load: updates and deletes stay at or above MinID, inserts take auto-increment ids above max.
	minEligible := maxID / 2
	below := count(t, db, "SELECT COUNT(*) FROM "+SourceTable+" WHERE id < ?", minEligible)
	var inserted []int64
	insertedCh := make(chan int64, 1024)
	g, err := NewLoadGen(db, LoadOptions{Table: SourceTable, RowsPerSecond: 400, Conns: 3, MinID: minEligible, Seed: 2,
		OnInsert: func(id int64, _ time.Time) {
			select {
			case insertedCh <- id:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(lctx) }()
	Eventually(t, 30*time.Second, "load generator ops", func() (bool, error) {
		st := g.Stats()
		return st.Inserts >= 100 && st.Updates >= 10 && st.Deletes >= 3, g.LastError()
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(insertedCh)
	for id := range insertedCh {
		inserted = append(inserted, id)
	}
	st := g.Stats()
	if st.Errors > 0 {
		t.Fatalf("load errors: %+v, last: %v", st, g.LastError())
	}
	if len(inserted) == 0 || inserted[0] <= maxID {
		t.Fatalf("OnInsert ids %v, want auto-increment ids above %d", inserted[:min(len(inserted), 5)], maxID)
	}
	if got := count(t, db, "SELECT COUNT(*) FROM "+SourceTable+" WHERE id < ?", minEligible); got != below {
		t.Fatalf("rows below MinID changed: %d → %d", below, got)
	}
	if recent := count(t, db, "SELECT COUNT(*) FROM "+SourceTable+" WHERE id > ? AND created > UTC_TIMESTAMP() - INTERVAL 5 MINUTE", maxID); recent == 0 {
		t.Fatal("inserted rows should carry created = now")
	}
	total := count(t, db, "SELECT COUNT(*) FROM "+SourceTable)
	if want := n + st.Inserts - st.Deletes; total != want {
		t.Fatalf("rows after load %d, want %d (%+v)", total, want, st)
	}

	// A graceful restart keeps the port and the data.
	port, pos := s.Port, gtidPos(t, db)
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Fatalf("restart changed the port %d → %d", port, s.Port)
	}
	if got := count(t, db, "SELECT COUNT(*) FROM "+SourceTable); got != total {
		t.Fatalf("rows after restart %d, want %d", got, total)
	}
	if got := gtidPos(t, db); got != pos {
		t.Fatalf("gtid_binlog_pos after restart %q, want %q", got, pos)
	}

	// A crash (SIGKILL) keeps committed rows; StartAgain recovers on the same port.
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "DELETE FROM "+SourceTable+" WHERE id = ?", minID); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("ping succeeded after Kill")
	}
	if err := s.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(t, db, "SELECT COUNT(*) FROM "+SourceTable); got != total-1 || s.Port != port {
		t.Fatalf("after crash: rows %d (want %d), port %d (want %d)", got, total-1, s.Port, port)
	}

	// Stop removes everything and is idempotent; the server cannot come back afterwards.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("server dir still there after Stop: %v", err)
	}
	if err := s.Restart(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Restart after Stop: %v, want ErrStopped", err)
	}
}

func gtidPos(t *testing.T, db *sql.DB) string {
	t.Helper()
	var pos string
	if err := db.QueryRowContext(t.Context(), "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestServerVariants(t *testing.T) {
	for _, c := range []struct {
		name  string
		o     Options
		query string
		want  string
	}{
		{"binlog off", Options{BinlogOff: true}, "SELECT @@log_bin", "0"},
		{"statement", Options{BinlogFormat: "STATEMENT"}, "SELECT @@binlog_format", "STATEMENT"},
		{"minimal image", Options{BinlogRowImage: "MINIMAL"}, "SELECT @@binlog_row_image", "MINIMAL"},
		{"domain and server id", Options{GTIDDomainID: 7, ServerID: 4242}, "SELECT CONCAT(@@gtid_domain_id, '-', @@server_id)", "7-4242"},
		{"extra args", Options{ExtraArgs: []string{"--innodb-autoinc-lock-mode=2"}}, "SELECT @@innodb_autoinc_lock_mode", "2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := StartT(t, c.o)
			db := open(t, s, "")
			var got string
			if err := db.QueryRowContext(t.Context(), c.query).Scan(&got); err != nil || got != c.want {
				t.Fatalf("%s = %q (%v), want %q", c.query, got, err, c.want)
			}
		})
	}
}

// TestLegacyTargetAndUsers checks the 2016-era CSMHE, the target AUTO_INCREMENT option and a limited user.
func TestLegacyTargetAndUsers(t *testing.T) {
	ctx := t.Context()
	s := StartT(t, Options{GTIDDomainID: 3})
	if err := s.LoadEdxSchemaWith(ctx, SchemaOptions{SkipSource: true, Legacy2016Target: true, TargetAutoIncrement: 50_000}); err != nil {
		t.Fatal(err)
	}
	db := open(t, s, "")
	if n := count(t, db, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ('edxapp', 'edxapp_csmh')"); n != 1 {
		t.Fatalf("%d tables, want only CSMHE", n)
	}
	cols := map[string]string{}
	rows, err := db.QueryContext(ctx, `SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = 'edxapp_csmh' ORDER BY ORDINAL_POSITION`)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		cols[name] = typ
		order = append(order, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if cols["created"] != "datetime" || cols["student_module_id"] != "int(11)" || order[5] != "id" {
		t.Fatalf("legacy CSMHE columns %v in order %v", cols, order)
	}
	if err := s.Exec(ctx, "INSERT INTO "+TargetTable+" (created, student_module_id, state) VALUES ('2016-05-04 03:02:01', 1, '{\"a\": \"😀\"}')"); err != nil {
		t.Fatal(err)
	}
	if id := count(t, db, "SELECT MAX(id) FROM "+TargetTable); id != 50_000 {
		t.Fatalf("first CSMHE id %d, want 50000", id)
	}
	if pos := gtidPos(t, db); !strings.HasPrefix(pos, "3-") {
		t.Fatalf("gtid_binlog_pos %q, want domain 3", pos)
	}

	if err := s.CreateUser(ctx, "csmh_reader", "it's secret", "SELECT ON edxapp_csmh.*", "REPLICATION CLIENT ON *.*"); err != nil {
		t.Fatal(err)
	}
	u, err := sql.Open("mysql", s.UserDSN("csmh_reader", "it's secret", "edxapp_csmh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	if n := count(t, u, "SELECT COUNT(*) FROM "+TargetTable); n != 1 {
		t.Fatalf("reader sees %d rows", n)
	}
	if _, err := u.ExecContext(ctx, "DELETE FROM "+TargetTable); err == nil {
		t.Fatal("reader could delete")
	}
}

// TestRemoveStale removes directories of dead harness processes and keeps live ones and foreign names.
func TestRemoveStale(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(name string) string {
		dir, err := os.MkdirTemp("", name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	gone := mk(fmt.Sprintf("%s%d-", serverPrefix, dead.Process.Pid))
	mine := mk(fmt.Sprintf("%s%d-", templatePrefix, os.Getpid()))
	foreign := mk(serverPrefix + "x")
	removeStale()
	if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale dir of dead pid %d kept: %v", dead.Process.Pid, err)
	}
	for _, d := range []string{mine, foreign} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("%s removed: %v", d, err)
		}
	}
}
