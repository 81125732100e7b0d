package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/verify"
)

// BenchmarkCutover measures cutover's verification after a full verify, with 1 % of the chunks touched through
// the stream since, beside `cutover --full` (every chunk) on the same servers in the same run: the two
// alternate in rounds, each after the quiet-server wait, and each round touches another 1 %.
func BenchmarkCutover(b *testing.B) {
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
	sdb, _ := src.Open("")
	ddb, _ := dst.Open("")
	defer sdb.Close()
	defer ddb.Close()
	gen, err := harness.GenerateCSMH(ctx, sdb, srcT, harness.GenOptions{Rows: n, Seed: 9})
	if err != nil {
		b.Fatal(err)
	}
	conn := []string{"--source-dsn", src.DSN(""), "--target-dsn", dst.DSN(""), "--metrics-addr", "", "--log-level", "warn"}
	runBinary(b, append([]string{"backfill", "--workers", "2"}, conn...)...)
	daemon := exec.Command(binPath, append([]string{"run"}, conn...)...)
	var dout bytes.Buffer
	daemon.Stdout, daemon.Stderr = &dout, &dout
	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_ = daemon.Wait()
	}()
	// About 200 chunks whatever the row count (10,000 rows each from 2M rows on, verify's default), so that
	// 1 % of them is a whole number of chunks; at least 2,000 rows, so a chunk spans more ids than a touch bucket.
	chunkRows := min(max(n/200, 2000), verify.DefaultChunkRows)
	runBinary(b, append([]string{"verify", "--chunk-rows", strconv.Itoa(chunkRows)}, conn...)...)

	type chunk struct{ lo, hi uint64 }
	var chunks []chunk
	rows, err := ddb.Query("SELECT start_id, end_id FROM edxapp_csmh." + verify.LedgerTable + " ORDER BY start_id")
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var c chunk
		if err := rows.Scan(&c.lo, &c.hi); err != nil {
			b.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	if err := rows.Close(); err != nil {
		b.Fatal(err)
	}
	perRound := max(len(chunks)/100, 1)
	next := 0
	// touch updates the middle row of each of the next perRound chunks (spread over the range) on the source,
	// and waits until the stream has applied them. A touch marks its bucket of 1,024 ids, which can reach
	// into the neighbouring chunk: at most two chunks per touched row.
	touch := func() {
		for range perRound {
			c := chunks[(next*37)%len(chunks)]
			next++
			var id uint64
			if err := sdb.QueryRow("SELECT id FROM "+srcT+" WHERE id >= ? AND id <= ? ORDER BY id LIMIT 1", c.lo+(c.hi-c.lo)/2, c.hi).Scan(&id); err != nil {
				b.Fatal(err)
			}
			mustExec(b, sdb, "UPDATE "+srcT+" SET grade = IFNULL(grade, 0) + 1 WHERE id = ?", id)
		}
		want := executed(b, sdb)
		deadline := time.Now().Add(5 * time.Minute)
		for {
			var s string
			if err := ddb.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&s); err != nil {
				b.Fatal(err)
			}
			if have, err := gtid.Parse("mariadb", s); err == nil && have.Contains(want) {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("the stream did not apply the touches within 5 minutes:\n%s", dout.String())
			}
			time.Sleep(100 * time.Millisecond) // polling interval of a deadline-bounded wait
		}
	}
	type report struct {
		GO      bool `json:"go"`
		Checked struct {
			ChunksChecked int   `json:"chunks_checked"`
			ChunksTotal   int   `json:"chunks_total"`
			RowsChecked   int64 `json:"rows_checked"`
			RowsTotal     int64 `json:"rows_total"`
		} `json:"checked"`
	}
	cutover := func(extra ...string) (time.Duration, report) {
		args := append(append([]string{"cutover", "--json", "--min-runway", "1000"}, extra...), conn...)
		cmd := exec.Command(binPath, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		t0 := time.Now()
		err := cmd.Run()
		took := time.Since(t0)
		var rep report
		if jerr := json.Unmarshal(out.Bytes(), &rep); err != nil || jerr != nil || !rep.GO {
			b.Fatalf("csmh-sync %v: %v %v\n%s%s", args, err, jerr, out.String(), errb.String())
		}
		return took, rep
	}

	const rounds = 2
	var incTook, fullTook time.Duration
	var worst report
	for round := range rounds {
		touch()
		quiesce(b, sdb, ddb)
		took, rep := cutover()
		fmt.Printf("    round %d: cutover (ledger) %6.2f s, %d of %d chunks checked\n", round+1, took.Seconds(), rep.Checked.ChunksChecked, rep.Checked.ChunksTotal)
		if incTook == 0 || took < incTook {
			incTook = took
		}
		if rep.Checked.ChunksChecked > worst.Checked.ChunksChecked {
			worst = rep
		}
		if rep.Checked.RowsTotal != gen.Rows {
			b.Fatalf("cutover counted %d rows in all, want %d", rep.Checked.RowsTotal, gen.Rows)
		}
		// The full pass is the baseline; it also leaves every chunk proven again, so the next round's
		// cutover again has only that round's touches to check.
		quiesce(b, sdb, ddb)
		took, rep = cutover("--full")
		fmt.Printf("    round %d: cutover --full   %6.2f s, %d of %d chunks checked\n", round+1, took.Seconds(), rep.Checked.ChunksChecked, rep.Checked.ChunksTotal)
		if fullTook == 0 || took < fullTook {
			fullTook = took
		}
	}
	c := worst.Checked
	share := 100 * float64(c.ChunksChecked) / float64(c.ChunksTotal)
	touchedShare := 100 * float64(perRound) / float64(len(chunks))
	fmt.Printf("\nCutover of %d rows in %d chunks of %d rows, after a full verify, %d chunks (%.1f %%) touched through the stream, best of %d rounds\n",
		gen.Rows, len(chunks), chunkRows, perRound, touchedShare, rounds)
	fmt.Printf("%-44s %10s %12s %10s\n", "what", "seconds", "chunks", "×full")
	fmt.Printf("%-44s %10.2f %12s %10.2f\n", "cutover --full (every chunk)", fullTook.Seconds(), strconv.Itoa(c.ChunksTotal), 1.0)
	fmt.Printf("%-44s %10.2f %12s %10.2f\n", "cutover (the ledger's unproven chunks)", incTook.Seconds(),
		fmt.Sprintf("%d (%.1f %%)", c.ChunksChecked, share), fullTook.Seconds()/incTook.Seconds())
	verdict := "yes"
	if share > 2*touchedShare {
		verdict = "NO"
	}
	fmt.Printf("cutover after a full verify with %.1f %% of chunks touched checks %.1f %% of chunks (≤ %.1f %%: %s)\n", touchedShare, share, 2*touchedShare, verdict)
	if share > 2*touchedShare {
		b.Fatalf("cutover checked %d of %d chunks with %d touched", c.ChunksChecked, c.ChunksTotal, perRound)
	}
	b.ReportMetric(share, "cutover-chunks-%")
	b.ReportMetric(fullTook.Seconds()/incTook.Seconds(), "cutover-speedup×full")
}
