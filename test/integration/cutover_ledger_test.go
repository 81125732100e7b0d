package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// cutoverJSON is the part of `cutover --json` these tests read.
type cutoverJSON struct {
	GO      bool     `json:"go"`
	Reasons []string `json:"reasons"`
	Checked *struct {
		Full          bool  `json:"full"`
		ChunksChecked int   `json:"chunks_checked"`
		ChunksTotal   int   `json:"chunks_total"`
		RowsChecked   int64 `json:"rows_checked"`
		RowsTotal     int64 `json:"rows_total"`
	} `json:"checked"`
	Verify *struct {
		Different []uint64 `json:"different"`
	} `json:"verify"`
}

func runCutoverJSON(t *testing.T, p *pair, extra ...string) (result, cutoverJSON) {
	t.Helper()
	r := csmh(t, 3*time.Minute, nil, append(append([]string{"cutover", "--json", "--timeout", "60s"}, extra...), p.args()...)...)
	var rep cutoverJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("cutover --json: exit %d, output is not JSON (%v):\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if rep.Checked == nil {
		t.Fatalf("cutover --json: exit %d, no \"checked\" in the report:\n%s%s", r.code, r.stdout, r.stderr)
	}
	return r, rep
}

// After a full verify, cutover compares only the chunks the stream has touched since: it reports how many
// of how many, says GO when they are equal and NO-GO when a row of one of them was changed on the target
// behind csmh-sync's back; --full compares every chunk.
func TestCutoverChecksOnlyTouchedChunks(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1 << 36})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 10_000, GapEvery: -1, Seed: 71, LargeStateEvery: -1})
	// Ids 4,096 apart: each row has a touch bucket of its own (1,024 ids), so a changed row marks exactly its chunk.
	sqlExec(t, p.src, "UPDATE "+harness.SourceTable+" SET id = id * 4096 ORDER BY id DESC")
	startRun(t, p)
	caughtUp(t, src, dst, 2*time.Minute)

	// A full verify in chunks of about 50 rows proves about 200 chunks equal in the ledger.
	r := csmh(t, 3*time.Minute, nil, append([]string{"verify", "--chunk-rows", "50"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	type chunk struct{ start, end, n int64 }
	var chunks []chunk
	rows, err := dst.Query("SELECT start_id, end_id, source_count FROM edxapp_csmh.csmh_sync_verify_ledger WHERE equal = 1 ORDER BY start_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c chunk
		if err := rows.Scan(&c.start, &c.end, &c.n); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	var inChunks int64
	for _, c := range chunks {
		inChunks += c.n
	}
	if len(chunks) < 160 || len(chunks) > 400 || inChunks != gen.Rows {
		t.Fatalf("the ledger holds %d equal chunks of %d rows after verify --chunk-rows 50 of %d rows, want about 200 of all of them", len(chunks), inChunks, gen.Rows)
	}
	all := len(chunks)
	// touch changes, through the source and so the stream, one row in the middle of each chunk i (1 % of them).
	midRow := func(c chunk) int64 {
		var id int64
		if err := src.QueryRow("SELECT id FROM "+harness.SourceTable+" WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1 OFFSET ?", c.start, c.end, c.n/2).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	touch := func(idx ...int) []int64 {
		var ids []int64
		for _, i := range idx {
			id := midRow(chunks[i])
			sqlExec(t, p.src, fmt.Sprintf("UPDATE %s SET grade = IFNULL(grade, 0) + 1 WHERE id = %d", harness.SourceTable, id))
			ids = append(ids, id)
		}
		caughtUp(t, src, dst, time.Minute)
		return ids
	}

	touch(17, 150)
	r, rep := runCutoverJSON(t, p)
	if r.code != 0 || !rep.GO {
		t.Fatalf("cutover after a full verify and 2 touched chunks: exit %d, want GO:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if c := rep.Checked; c.Full || c.ChunksChecked != 2 || c.ChunksTotal != all || c.RowsChecked != chunks[17].n+chunks[150].n || c.RowsTotal != gen.Rows {
		t.Fatalf("cutover checked %+v; want 2 of %d chunks, %d of %d rows, not a full pass:\n%s", *c, all, chunks[17].n+chunks[150].n, gen.Rows, r.stdout)
	}
	r = csmh(t, 3*time.Minute, nil, append([]string{"cutover", "--timeout", "60s"}, p.args()...)...)
	if want := fmt.Sprintf("checked 0 of %d chunks", all); r.code != 0 || !hasLine(r.stdout, "ok", want) {
		t.Fatalf("cutover again, nothing touched since: exit %d, want GO with %q:\n%s%s", r.code, want, r.stdout, r.stderr)
	}

	// A row of a touched chunk changed on the target alone: the chunk is compared, the row found.
	ids := touch(60, 61)
	sqlExec(t, p.dst, fmt.Sprintf("UPDATE %s SET state = CONCAT(IFNULL(state, ''), ' ') WHERE id = %d", harness.TargetTable, ids[1]))
	r, rep = runCutoverJSON(t, p)
	if r.code != 1 || rep.GO || rep.Checked.ChunksChecked != 2 || rep.Verify == nil || len(rep.Verify.Different) != 1 || rep.Verify.Different[0] != uint64(ids[1]) {
		t.Fatalf("cutover with row %d changed on the target in a touched chunk: exit %d, want NO-GO naming it after checking 2 chunks:\n%s%s",
			ids[1], r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(strings.Join(rep.Reasons, "\n"), "NO-GO verify") {
		t.Fatalf("cutover's NO-GO does not name verify:\n%s", r.stdout)
	}

	// --full compares every chunk.
	r, rep = runCutoverJSON(t, p, "--full")
	if r.code != 1 || !rep.Checked.Full || rep.Checked.ChunksChecked != all || rep.Checked.ChunksTotal != all || rep.Checked.RowsChecked != gen.Rows {
		t.Fatalf("cutover --full: exit %d, checked %+v; want NO-GO over all %d chunks and %d rows:\n%s%s", r.code, *rep.Checked, all, gen.Rows, r.stdout, r.stderr)
	}
	r = csmh(t, 3*time.Minute, nil, append([]string{"verify", "--repair"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify --repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r, rep = runCutoverJSON(t, p)
	if r.code != 0 || rep.Checked.ChunksChecked != 1 {
		t.Fatalf("cutover after the repair: exit %d, checked %+v; want GO over the one repaired chunk:\n%s%s", r.code, *rep.Checked, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)
}

// A DDL on CSMH changes its rows without a row event (TRUNCATE here). The stream stops at it; accepting it with
// `run --accept-ddl` drops verify's proofs, so cutover, which after a full verify compares only the chunks the
// stream touched, compares every chunk again and says NO-GO: the source is empty, the target still holds
// every row. Before, the proofs stood, cutover compared 0 chunks and said GO.
func TestAcceptedDDLDropsVerifyProofs(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1 << 36})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 5_000, Seed: 71, LargeStateEvery: -1})
	d := startRun(t, p)
	harness.Eventually(t, time.Minute, "backfill done", func() (bool, error) { return backfillDone(dst) })
	caughtUp(t, src, dst, 2*time.Minute)
	r := csmh(t, 3*time.Minute, nil, append([]string{"verify", "--chunk-rows", "500"}, p.args()...)...)
	if r.code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r, rep := runCutoverJSON(t, p, "--min-runway", "1000"); r.code != 0 || !rep.GO || rep.Checked.ChunksChecked != 0 {
		t.Fatalf("cutover after verify: exit %d, GO %v, %d chunks checked; want GO on the ledger's proofs alone:\n%s",
			r.code, rep.GO, rep.Checked.ChunksChecked, strings.Join(rep.Reasons, "\n"))
	}

	sqlExec(t, p.src, "TRUNCATE TABLE "+harness.SourceTable)
	var named string
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		m := regexp.MustCompile(`transaction ([0-9]+-[0-9]+-[0-9]+)\)`).FindStringSubmatch(d.out.String())
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || m == nil {
			t.Fatalf("run exited with %v; want exit 2 with the DDL stop naming its GTID:\n%s", err, tailStr(d.out.String(), 20))
		}
		named = m[1]
	case <-time.After(time.Minute):
		t.Fatal("run did not stop at the TRUNCATE")
	}
	startRun(t, p, "--accept-ddl", named)
	caughtUp(t, src, dst, time.Minute)
	var sn, dn int64
	if err := src.QueryRow("SELECT COUNT(*) FROM " + harness.SourceTable).Scan(&sn); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&dn); err != nil {
		t.Fatal(err)
	}
	if sn != 0 || dn != gen.Rows {
		t.Fatalf("after the accepted TRUNCATE: source %d rows, target %d; want 0 and %d", sn, dn, gen.Rows)
	}
	r, rep := runCutoverJSON(t, p, "--min-runway", "1000")
	if r.code == 0 || rep.GO || rep.Checked.ChunksChecked == 0 || rep.Checked.ChunksChecked != rep.Checked.ChunksTotal {
		t.Fatalf("cutover after the accepted TRUNCATE: exit %d, GO %v, %d of %d chunks checked; want NO-GO with every chunk compared:\n%s",
			r.code, rep.GO, rep.Checked.ChunksChecked, rep.Checked.ChunksTotal, strings.Join(rep.Reasons, "\n"))
	}
}
