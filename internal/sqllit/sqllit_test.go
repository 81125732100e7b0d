package sqllit

import (
	"database/sql"
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		{nil, "NULL"}, {int32(-5), "-5"}, {uint64(18446744073709551615), "18446744073709551615"},
		{0.1, "0.1"}, {1e-7, "1e-07"}, {2.0 / 3.0, "0.6666666666666666"}, {"it's", `'it\'s'`},
		{[]byte("a\\b\n\x00\x1a"), `'a\\b\n\0\Z'`}, {"😀", "'😀'"},
	} {
		var sb strings.Builder
		if !Value(&sb, c.in) {
			t.Fatalf("%T not handled", c.in)
		}
		if sb.String() != c.want {
			t.Errorf("Value(%#v) = %s, want %s", c.in, sb.String(), c.want)
		}
	}
	var sb strings.Builder
	if Value(&sb, struct{}{}) {
		t.Fatal("unknown type accepted")
	}
}

func TestTSVRow(t *testing.T) {
	var sb strings.Builder
	TSVRow(&sb, []sql.RawBytes{[]byte("1"), nil, []byte(""), []byte("a\tb\nc\\d\x00e"), []byte(`\N`), []byte("NULL"), []byte("😀")})
	want := "1\t\\N\t\ta\\tb\\nc\\\\d\\0e\t\\\\N\tNULL\t😀\n"
	if sb.String() != want {
		t.Fatalf("TSVRow = %q, want %q", sb.String(), want)
	}
}

// MaxRowBytes bounds what Row and TSVRow write, for values that need every escape and for none.
func TestMaxRowBytes(t *testing.T) {
	worst := sql.RawBytes(strings.Repeat("\x00\\'\"\n\r\t\x1a", 64))
	for _, vals := range [][]sql.RawBytes{
		{worst, worst, nil, sql.RawBytes("")},
		{sql.RawBytes("12345"), sql.RawBytes("plain text"), nil},
		{},
	} {
		kinds := make([]Kind, len(vals))
		for i := range kinds {
			kinds[i] = Kind(i % 3)
		}
		var row, tsv strings.Builder
		row.WriteByte(',')
		Row(&row, vals, kinds)
		TSVRow(&tsv, vals)
		if m := MaxRowBytes(vals); row.Len() > m || tsv.Len() > m {
			t.Errorf("MaxRowBytes = %d, below what Row (%d) or TSVRow (%d) wrote", m, row.Len(), tsv.Len())
		}
	}
}
