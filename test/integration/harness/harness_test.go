package harness

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func TestServerBinlogDataAndLoad(t *testing.T) {
	ctx := context.Background()
	s := StartT(t, Options{})
	db, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logBin int
	var format, image string
	if err := db.QueryRow("SELECT @@log_bin, @@binlog_format, @@binlog_row_image").Scan(&logBin, &format, &image); err != nil {
		t.Fatal(err)
	}
	if logBin != 1 || format != "ROW" || image != "FULL" {
		t.Fatalf("binlog settings: log_bin=%d format=%s image=%s", logBin, format, image)
	}
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := GenerateCSMH(ctx, db, SourceTable, GenOptions{Rows: 20000, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var n, minID, maxID, nulls, wide int64
	if err := db.QueryRow(`SELECT COUNT(*), MIN(id), MAX(id), SUM(state IS NULL), SUM(LENGTH(state) > CHAR_LENGTH(state) AND state LIKE '%😀%')
		FROM `+SourceTable).Scan(&n, &minID, &maxID, &nulls, &wide); err != nil {
		t.Fatal(err)
	}
	if n != 20000 || minID != res.MinID || maxID != res.MaxID || maxID <= n {
		t.Fatalf("rows %d ids %d..%d, generator said %+v (want gaps: max id > count)", n, minID, maxID, res)
	}
	if nulls == 0 || wide == 0 {
		t.Fatalf("want NULL states and 4-byte UTF-8: nulls=%d emoji=%d", nulls, wide)
	}
	var gtid string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil || gtid == "" {
		t.Fatalf("gtid_binlog_pos %q: %v", gtid, err)
	}

	g, err := NewLoadGen(db, LoadOptions{Table: SourceTable, RowsPerSecond: 500, Conns: 4, MinID: 1})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- g.Run(lctx) }()
	Eventually(t, 30*time.Second, "load generator ops", func() (bool, error) {
		st := g.Stats()
		return st.Inserts >= 100 && st.Updates >= 5 && st.Deletes >= 1, nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Errors > 0 {
		t.Fatalf("load errors: %+v, last: %v", st, g.LastError())
	}

	port := s.Port
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Fatalf("restart changed the port %d → %d", port, s.Port)
	}
	var after int64
	if err := db.QueryRow("SELECT COUNT(*) FROM " + SourceTable).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after < n {
		t.Fatalf("rows after restart %d < %d", after, n)
	}
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
	} {
		t.Run(c.name, func(t *testing.T) {
			s := StartT(t, c.o)
			db, err := s.Open("")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var got string
			if err := db.QueryRow(c.query).Scan(&got); err != nil || got != c.want {
				t.Fatalf("%s = %q (%v), want %q", c.query, got, err, c.want)
			}
		})
	}
}
