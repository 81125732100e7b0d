package harness

import (
	"context"
	"database/sql"
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
	Created         time.Time
	State           sql.NullString
	Grade, MaxGrade sql.NullFloat64
	StudentModuleID int64
}

// GenOptions shape generated data.
type GenOptions struct {
	Rows            int
	StartID         int64 // default 1
	GapEvery        int   // about every GapEvery ids a span of ids is skipped (deleted history); 0 = 1000, <0 = no gaps
	Seed            int64
	BatchRows       int // rows per INSERT; default 1000
	LargeStateEvery int // one row in LargeStateEvery gets a 64 KiB–1 MiB state; 0 = 5000, <0 = never
}

// GenResult describes what was generated.
type GenResult struct {
	Rows         int64
	MinID, MaxID int64
	Bytes        int64
}

var answers = []string{`["choice_0"]`, `["choice_1","choice_3"]`, `"42"`, `"x = \"y\" \\ z"`, `"日本語の答え"`,
	`"emoji 😀 answer 🎓"`, `"line1\nline2"`, `"𠜎𠜱 rare CJK"`, `"3.14159"`, `""`}

// NewRow returns a realistic CSMH row: CAPA-shaped JSON state of 100–1,500 bytes (sometimes '{}' or NULL),
// doubles that are not all integral, microsecond UTC timestamps between 2013 and 2026.
func NewRow(r *rand.Rand, id int64) Row {
	row := Row{ID: id, StudentModuleID: 1 + r.Int63n(5_000_000)}
	start := time.Date(2013, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	end := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	row.Created = time.UnixMicro(start + r.Int63n(end-start)).UTC()
	if r.Intn(3) > 0 {
		row.Version = sql.NullString{String: strconv.FormatInt(r.Int63(), 16)[:8], Valid: r.Intn(4) > 0}
	}
	switch p := r.Intn(100); {
	case p < 3:
		// NULL state
	case p < 10:
		row.State = sql.NullString{String: "{}", Valid: true}
	default:
		row.State = sql.NullString{String: capaState(r, 1+r.Intn(4)), Valid: true}
	}
	if r.Intn(5) > 0 {
		grades := []float64{0, 0.5, 1, 3, 0.333333333333, 2.0 / 3.0, 1e-7, 0.1}
		row.Grade = sql.NullFloat64{Float64: grades[r.Intn(len(grades))], Valid: true}
		row.MaxGrade = sql.NullFloat64{Float64: float64(1 + r.Intn(10)), Valid: r.Intn(10) > 0}
	}
	return row
}

func capaState(r *rand.Rand, inputs int) string {
	var b strings.Builder
	block := fmt.Sprintf("%032x", r.Uint64())
	b.WriteString(`{"correct_map": {`)
	for i := 0; i < inputs; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		corr := []string{"correct", "incorrect", "partially-correct"}[r.Intn(3)]
		fmt.Fprintf(&b, `"%s_%d_1": {"hint": "", "hintmode": null, "correctness": "%s", "msg": "", "npoints": null, "queuestate": null}`, block, i+2, corr)
	}
	b.WriteString(`}, "input_state": {`)
	for i := 0; i < inputs; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"%s_%d_1": {}`, block, i+2)
	}
	ts := time.Unix(1_300_000_000+r.Int63n(400_000_000), 0).UTC().Format("2006-01-02T15:04:05Z")
	fmt.Fprintf(&b, `}, "last_submission_time": "%s", "attempts": %d, "seed": %d, "done": %v, "student_answers": {`,
		ts, 1+r.Intn(5), 1+r.Intn(1000), r.Intn(2) == 0)
	for i := 0; i < inputs; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, `"%s_%d_1": %s`, block, i+2, answers[r.Intn(len(answers))])
	}
	b.WriteString("}}")
	return b.String()
}

// GenerateCSMH inserts o.Rows rows with explicit ids into table (database.table) in multi-row batches.
func GenerateCSMH(ctx context.Context, db *sql.DB, table string, o GenOptions) (GenResult, error) {
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
	r := rand.New(rand.NewSource(o.Seed))
	res := GenResult{MinID: o.StartID}
	id := o.StartID
	var sb strings.Builder
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		_, err := db.ExecContext(ctx, sb.String())
		sb.Reset()
		n = 0
		return err
	}
	for i := 0; i < o.Rows; i++ {
		row := NewRow(r, id)
		if o.LargeStateEvery > 0 && r.Intn(o.LargeStateEvery) == 0 {
			row.State = sql.NullString{String: largeState(r, 64<<10+r.Intn(960<<10)), Valid: true}
		}
		if n == 0 {
			sb.WriteString("INSERT INTO " + table + " (id, version, created, state, grade, max_grade, student_module_id) VALUES ")
		} else {
			sb.WriteByte(',')
		}
		writeRow(&sb, row)
		n++
		res.Rows++
		res.MaxID = id
		res.Bytes += int64(len(row.State.String) + 64)
		if n >= o.BatchRows || sb.Len() > 4<<20 {
			if err := flush(); err != nil {
				return res, err
			}
		}
		id++
		if o.GapEvery > 0 && r.Intn(o.GapEvery) == 0 {
			id += 1 + r.Int63n(int64(o.GapEvery))
		}
	}
	return res, flush()
}

var words = []string{"lorem ", "ipsum ", "😀 ", "日本 ", "\\n ", "é "}

func largeState(r *rand.Rand, size int) string {
	var b strings.Builder
	b.WriteString(`{"big": "`)
	for b.Len() < size {
		b.WriteString(words[r.Intn(len(words))])
		b.WriteString(strconv.Itoa(r.Intn(1000)))
	}
	b.WriteString(`"}`)
	return b.String()
}

func writeRow(sb *strings.Builder, row Row) {
	fmt.Fprintf(sb, "(%d,%s,'%s',%s,%s,%s,%d)", row.ID, Quote(row.Version), row.Created.Format("2006-01-02 15:04:05.000000"),
		Quote(row.State), floatLit(row.Grade), floatLit(row.MaxGrade), row.StudentModuleID)
}

// Quote renders a string literal (or NULL) escaped for MySQL's default sql_mode.
func Quote(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	var b strings.Builder
	sqllit.Quote(&b, []byte(s.String))
	return b.String()
}

func floatLit(f sql.NullFloat64) string {
	if !f.Valid {
		return "NULL"
	}
	return strconv.FormatFloat(f.Float64, 'g', -1, 64)
}
