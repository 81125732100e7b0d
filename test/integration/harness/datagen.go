package harness

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"time"

	"github.com/csmh-sync/csmh-sync/internal/sqllit"
)

// Row is one CSMH row.
type Row struct {
	ID              int64
	Version         sql.NullString
	Created         time.Time // UTC, microsecond precision
	State           sql.NullString
	Grade, MaxGrade sql.NullFloat64
	StudentModuleID int64
}

// GenOptions shape generated data.
type GenOptions struct {
	Rows    int
	StartID int64 // first id; default 1
	// GapEvery: past the first GapEvery ids, about every GapEvery ids a span of up to GapEvery ids is
	// skipped, as deleted history leaves it; 0 = 1000, <0 = no gaps.
	GapEvery        int
	Seed            int64
	BatchRows       int // rows per INSERT, which is also bounded to about 4 MiB of SQL; default 1000
	LargeStateEvery int // about one row in LargeStateEvery gets a 64 KiB–1 MiB state; 0 = 5000, <0 = never
}

// GenResult describes what GenerateCSMH inserted. Bytes approximates the rows' stored size.
type GenResult struct {
	Rows         int64
	MinID, MaxID int64
	Bytes        int64
}

const maxBatchSQL = 4 << 20

var (
	genStart = time.Date(2013, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	genEnd   = time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC).UnixMicro()

	// Answers as they appear inside the JSON, already JSON-encoded: quotes, backslashes, escaped newlines,
	// apostrophes (which SQL literals must escape), 2-, 3- and 4-byte UTF-8.
	answers = []string{`["choice_0"]`, `["choice_1", "choice_3"]`, `"42"`, `"x = \"y\" \\ z"`, `"日本語の答え"`,
		`"emoji 😀 answer 🎓"`, `"line1\nline2\r\n\ttabbed"`, `"𠜎𠜱 rare CJK"`, `"3.14159"`, `""`,
		`"it's O'Brien's"`, `"crème brûlée"`, `"C:\\Users\\student"`, `"[{\"a\": 1}]"`}
	grades = []float64{0, 0, 0.5, 1, 1, 1, 2, 3, 0.333333333333, 2.0 / 3.0, 0.1, 1e-7, 0.75}
)

// NewRow returns a realistic CSMH row: a CAPA-shaped JSON state of 100–1,500 bytes (sometimes '{}', the
// first-submission shape or NULL), a mostly NULL version, doubles that are not all integral, and a
// microsecond UTC timestamp between 2013 and 2026.
func NewRow(r *rand.Rand, id int64) Row {
	row := Row{ID: id, StudentModuleID: 1 + r.Int63n(5_000_000)}
	row.Created = time.UnixMicro(genStart + r.Int63n(genEnd-genStart)).UTC()
	switch v := r.Intn(10); {
	case v < 6: // NULL, as most history rows have
	case v < 9:
		row.Version = sql.NullString{String: fmt.Sprintf("%08x", r.Uint32()), Valid: true}
	default: // a course version ObjectId
		row.Version = sql.NullString{String: fmt.Sprintf("%08x%016x", r.Uint32(), r.Uint64()), Valid: true}
	}
	switch p := r.Intn(100); {
	case p < 3: // NULL
	case p < 9:
		row.State = sql.NullString{String: "{}", Valid: true}
	case p < 15:
		row.State = sql.NullString{String: firstState(r), Valid: true}
	case p < 16:
		row.State = sql.NullString{String: indented(capaState(r, 1+r.Intn(2))), Valid: true}
	default:
		row.State = sql.NullString{String: capaState(r, 1+r.Intn(4)), Valid: true}
	}
	if r.Intn(5) > 0 {
		row.Grade = sql.NullFloat64{Float64: grades[r.Intn(len(grades))], Valid: true}
		row.MaxGrade = sql.NullFloat64{Float64: float64(1 + r.Intn(10)), Valid: r.Intn(10) > 0}
		if r.Intn(20) == 0 {
			row.MaxGrade.Float64 = 3.0
		}
	}
	return row
}

func blockID(r *rand.Rand) string { return fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64()) }

// firstState is the shape of a problem's first history row: a seed and empty inputs.
func firstState(r *rand.Rand) string {
	return fmt.Sprintf(`{"seed": %d, "input_state": {"%s_2_1": {}}}`, 1+r.Intn(1000), blockID(r))
}

func capaState(r *rand.Rand, inputs int) string {
	var b strings.Builder
	block := blockID(r)
	each := func(f func(i int)) {
		for i := range inputs {
			if i > 0 {
				b.WriteString(", ")
			}
			f(i)
		}
	}
	b.WriteString(`{"correct_map": {`)
	each(func(i int) {
		corr := []string{"correct", "incorrect", "partially-correct"}[r.Intn(3)]
		fmt.Fprintf(&b, `"%s_%d_1": {"hint": "", "hintmode": null, "correctness": "%s", "msg": "", "npoints": null, "queuestate": null}`,
			block, i+2, corr)
	})
	b.WriteString(`}, "input_state": {`)
	each(func(i int) { fmt.Fprintf(&b, `"%s_%d_1": {}`, block, i+2) })
	ts := time.UnixMicro(genStart + r.Int63n(genEnd-genStart)).UTC().Format("2006-01-02T15:04:05Z")
	fmt.Fprintf(&b, `}, "last_submission_time": "%s", "attempts": %d, "seed": %d, "done": %v, "student_answers": {`,
		ts, 1+r.Intn(5), 1+r.Intn(1000), r.Intn(2) == 0)
	each(func(i int) { fmt.Fprintf(&b, `"%s_%d_1": %s`, block, i+2, answers[r.Intn(len(answers))]) })
	b.WriteString("}}")
	return b.String()
}

// indented re-renders a JSON state across lines, so some values carry raw newlines and spaces.
func indented(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return s
	}
	return string(out)
}

var words = []string{"lorem ", "ipsum ", "😀 ", "日本 ", `\n `, "é ", `\"q\" `, "it's "}

// largeState is a state of about size bytes, like a problem that stores a long essay or log.
func largeState(r *rand.Rand, size int) string {
	var b strings.Builder
	b.Grow(size + 16)
	b.WriteString(`{"essay": "`)
	for b.Len() < size {
		b.WriteString(words[r.Intn(len(words))])
		b.WriteString(strconv.Itoa(r.Intn(1000)))
	}
	b.WriteString(`", "done": true}`)
	return b.String()
}

// GenerateCSMH inserts o.Rows rows with explicit ids into table (database.table), in multi-row INSERTs of at
// most BatchRows rows and about 4 MiB of SQL, each its own autocommit transaction. The ids ascend from
// StartID with gaps, so the table's AUTO_INCREMENT ends at MaxID+1.
func GenerateCSMH(ctx context.Context, db *sql.DB, table string, o GenOptions) (GenResult, error) {
	if table == "" || o.Rows < 0 {
		return GenResult{}, errors.New("harness: GenerateCSMH needs a table and Rows >= 0")
	}
	if o.StartID <= 0 {
		o.StartID = 1
	}
	if o.GapEvery == 0 {
		o.GapEvery = 1000
	}
	if o.BatchRows <= 0 {
		o.BatchRows = 1000
	}
	if o.LargeStateEvery == 0 {
		o.LargeStateEvery = 5000
	}
	// Ids and contents draw from separate streams, so the id layout depends only on Seed, StartID and
	// GapEvery: a change to how rows look does not move the gaps. The first GapEvery ids are dense, so
	// tests can name early rows by literal id.
	r := rand.New(rand.NewSource(o.Seed))
	gaps := rand.New(rand.NewSource(o.Seed*7919 + 1))
	head := "INSERT INTO " + table + " (id, version, created, state, grade, max_grade, student_module_id) VALUES "
	var res GenResult
	var stmt, one strings.Builder
	n := 0
	var batchFirst int64
	flush := func() error {
		if n == 0 {
			return nil
		}
		if _, err := db.ExecContext(ctx, stmt.String()); err != nil {
			return fmt.Errorf("harness: insert ids %d..%d into %s: %w", batchFirst, res.MaxID, table, err)
		}
		stmt.Reset()
		n = 0
		return nil
	}
	id := o.StartID
	for range o.Rows {
		row := NewRow(r, id)
		if o.LargeStateEvery > 0 && r.Intn(o.LargeStateEvery) == 0 {
			row.State = sql.NullString{String: largeState(r, 64<<10+r.Intn(960<<10)), Valid: true}
		}
		one.Reset()
		writeRow(&one, row)
		if n > 0 && stmt.Len()+one.Len() > maxBatchSQL {
			if err := flush(); err != nil {
				return res, err
			}
		}
		if n == 0 {
			stmt.WriteString(head)
			batchFirst = id
		} else {
			stmt.WriteByte(',')
		}
		stmt.WriteString(one.String())
		n++
		if res.Rows == 0 {
			res.MinID = id
		}
		res.Rows++
		res.MaxID = id
		res.Bytes += int64(len(row.State.String) + len(row.Version.String) + 8*5)
		if n >= o.BatchRows {
			if err := flush(); err != nil {
				return res, err
			}
		}
		id++
		if o.GapEvery > 0 && id >= o.StartID+int64(o.GapEvery) && gaps.Intn(o.GapEvery) == 0 {
			id += 1 + gaps.Int63n(int64(o.GapEvery))
		}
	}
	return res, flush()
}

func writeRow(sb *strings.Builder, row Row) {
	fmt.Fprintf(sb, "(%d,%s,'%s',%s,%s,%s,%d)", row.ID, Quote(row.Version), row.Created.Format("2006-01-02 15:04:05.000000"),
		Quote(row.State), floatLit(row.Grade), floatLit(row.MaxGrade), row.StudentModuleID)
}

// Quote renders a string literal (or NULL) escaped for a sql_mode without NO_BACKSLASH_ESCAPES.
func Quote(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	var b strings.Builder
	sqllit.Quote(&b, []byte(s.String))
	return b.String()
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// floatLit prints the shortest decimal that reads back as the same double.
func floatLit(f sql.NullFloat64) string {
	if !f.Valid {
		return "NULL"
	}
	return strconv.FormatFloat(f.Float64, 'g', -1, 64)
}
