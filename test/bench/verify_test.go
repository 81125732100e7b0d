package bench

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/verify"
)

// BenchmarkVerify runs checksum-mode verify over ≥1M rows on two servers and, in the same run, a full-table
// COUNT(*) scan and a single-server BIT_XOR(CRC32(…)) over the whole table.
func BenchmarkVerify(b *testing.B) {
	n := rowsEnv()
	src := start(b, harness.Options{})
	dst := start(b, harness.Options{})
	ctx, cancel := ctxT(time.Hour)
	defer cancel()
	if err := src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		b.Fatal(err)
	}
	if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true, TargetAutoIncrement: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	sdb, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "source", DSN: src.DSN("")}, dbconn.Options{MaxOpenConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	ddb, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "target", DSN: dst.DSN("")}, dbconn.Options{MaxOpenConns: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer sdb.Close()
	defer ddb.Close()
	gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: n, Seed: 5})
	if err != nil {
		b.Fatal(err)
	}
	// The same rows on the target (through csmh-sync's own copy, which the backfill benchmark measures).
	runBinary(b, "backfill", "--source-dsn", src.DSN(""), "--target-dsn", dst.DSN(""), "--metrics-addr", "", "--log-level", "warn", "--workers", "2")

	countTook, err := timeIt(func() error {
		var c int64
		return sdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+srcT).Scan(&c)
	})
	if err != nil {
		b.Fatal(err)
	}
	crcTook, err := timeIt(func() error {
		var x any
		return sdb.QueryRowContext(ctx, "SELECT BIT_XOR(CRC32(CONCAT_WS('#', id, version, created, state, grade, max_grade, student_module_id))) FROM "+srcT).Scan(&x)
	})
	if err != nil {
		b.Fatal(err)
	}
	sn, _ := table.ParseName(srcT)
	tn, _ := table.ParseName(dstT)
	v, err := verify.New(sdb, ddb, metrics.Discard(), slog.New(slog.DiscardHandler), verify.Config{SourceTable: sn, TargetTable: tn, Mode: verify.ModeChecksum})
	if err != nil {
		b.Fatal(err)
	}
	var res *verify.Result
	vTook, err := timeIt(func() error {
		var err error
		res, err = v.Run(context.Background())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	if !res.Equal || res.RowsChecked != gen.Rows {
		b.Fatalf("verify: equal=%v rows=%d, want equal over %d", res.Equal, res.RowsChecked, gen.Rows)
	}
	rate := func(d time.Duration) float64 { return float64(gen.Rows) / d.Seconds() }
	fmt.Printf("\nVerify of %d rows on two servers (2 workers)\n%-52s %10s %10s\n", gen.Rows, "what", "rows/s", "ratio")
	fmt.Printf("%-52s %10.0f %10.2f\n", "SELECT COUNT(*) full scan, one server", rate(countTook), countTook.Seconds()/countTook.Seconds())
	fmt.Printf("%-52s %10.0f %10.2f\n", "BIT_XOR(CRC32(row)) whole table, one server", rate(crcTook), countTook.Seconds()/crcTook.Seconds())
	fmt.Printf("%-52s %10.0f %10.2f\n", "csmh-sync verify --mode checksum, both servers", rate(vTook), countTook.Seconds()/vTook.Seconds())
	fmt.Printf("verify / single-server BIT_XOR(CRC32): %.2f; projection for 1e9 rows: %s\n",
		crcTook.Seconds()/vTook.Seconds(), (time.Duration(1e9/rate(vTook)) * time.Second).Round(time.Minute))
	b.ReportMetric(rate(vTook), "verify-rows/s")
	b.ReportMetric(crcTook.Seconds()/vTook.Seconds(), "verify×crc32")
}
