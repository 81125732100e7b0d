package table

import (
	"fmt"
	"strings"
)

// Problem is one finding of Compare.
type Problem struct {
	Column string
	Msg    string
}

func (p Problem) String() string {
	if p.Column == "" {
		return p.Msg
	}
	return "column " + p.Column + ": " + p.Msg
}

var intRank = map[string]int{"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5}

var textMax = map[string]int64{"tinytext": 255, "text": 65535, "mediumtext": 16777215, "longtext": 4294967295}

// charsetBytes is the widest character each charset stores; a target narrower than the source loses data.
var charsetBytes = map[string]int{"latin1": 1, "ascii": 1, "utf8": 3, "utf8mb3": 3, "utf8mb4": 4, "binary": 4}

// Compare checks that every source row fits the target unchanged, matching columns by name. Errors are
// lossy or impossible mappings; warnings are oddities that do not lose data.
func Compare(src, dst *Table) (errs, warns []Problem) {
	for _, sc := range src.Columns {
		dc := dst.Column(sc.Name)
		if dc == nil {
			errs = append(errs, Problem{sc.Name, fmt.Sprintf("missing in %s: add it (ALTER TABLE ... ADD COLUMN %s %s)", dst.Name, QuoteIdent(sc.Name), sc.ColumnType)})
			continue
		}
		e, w := compareColumn(sc, *dc)
		for _, m := range e {
			errs = append(errs, Problem{sc.Name, m})
		}
		for _, m := range w {
			warns = append(warns, Problem{sc.Name, m})
		}
	}
	for _, dc := range dst.Columns {
		if src.Column(dc.Name) == nil {
			if !dc.Nullable && !dc.HasDefault && !dc.AutoIncr {
				errs = append(errs, Problem{dc.Name, fmt.Sprintf("exists only in %s and is NOT NULL without a default: copied rows cannot fill it", dst.Name)})
			} else {
				warns = append(warns, Problem{dc.Name, fmt.Sprintf("exists only in %s; copied rows leave it at its default", dst.Name)})
			}
		}
	}
	for idx, cols := range dst.UniqueKeys {
		warns = append(warns, Problem{"", fmt.Sprintf("%s has unique key %s(%s) besides the primary key: rows colliding on it stop the copy instead of overwriting", dst.Name, idx, strings.Join(cols, ","))})
	}
	return errs, warns
}

func compareColumn(s, d Column) (errs, warns []string) {
	lossy := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	odd := func(f string, a ...any) { warns = append(warns, fmt.Sprintf(f, a...)) }
	if s.Nullable && !d.Nullable {
		lossy("NULL allowed in the source but not in the target: make the target column NULL")
	}
	sr, dr := intRank[s.DataType], intRank[d.DataType]
	switch {
	case sr > 0 && dr > 0:
		switch {
		case dr < sr:
			lossy("%s → %s narrows the integer: widen the target column", s.ColumnType, d.ColumnType)
		case s.Unsigned && !d.Unsigned && dr == sr:
			lossy("%s → %s cannot hold the upper half of the unsigned range", s.ColumnType, d.ColumnType)
		case !s.Unsigned && d.Unsigned:
			odd("%s → %s: negative values would be rejected (ids are positive, so this is the usual widening)", s.ColumnType, d.ColumnType)
		}
		return
	case sr > 0 || dr > 0:
		lossy("%s → %s changes an integer into another type", s.ColumnType, d.ColumnType)
		return
	}
	switch {
	case s.DataType == "datetime" || s.DataType == "timestamp":
		if d.DataType != "datetime" && d.DataType != "timestamp" {
			lossy("%s → %s is not a date-time", s.ColumnType, d.ColumnType)
		} else if d.Precision < s.Precision {
			lossy("%s → %s drops fractional seconds: use datetime(%d) in the target", s.ColumnType, d.ColumnType, s.Precision)
		} else if s.DataType != d.DataType {
			odd("%s → %s: timestamp and datetime differ in range and time-zone handling", s.ColumnType, d.ColumnType)
		}
	case s.DataType == "double" || s.DataType == "float" || s.DataType == "decimal":
		switch {
		case s.DataType == d.DataType && s.ColumnType == d.ColumnType:
		case s.DataType == "float" && d.DataType == "double":
		case s.DataType == "double" && d.DataType == "float":
			lossy("double → float loses precision: use double")
		case d.DataType == "double" || d.DataType == "float" || d.DataType == "decimal":
			odd("%s → %s may round values", s.ColumnType, d.ColumnType)
		default:
			lossy("%s → %s is not numeric", s.ColumnType, d.ColumnType)
		}
	case isString(s.DataType):
		if !isString(d.DataType) {
			lossy("%s → %s is not a string type", s.ColumnType, d.ColumnType)
			return
		}
		if !fitsLength(s, d) {
			lossy("%s → %s is shorter: long values would be cut", s.ColumnType, d.ColumnType)
		}
		sb, db := charsetBytes[strings.ToLower(s.Charset)], charsetBytes[strings.ToLower(d.Charset)]
		switch {
		case sb > 0 && db > 0 && db < sb:
			lossy("charset %s → %s cannot store every character: convert the target to %s", s.Charset, d.Charset, s.Charset)
		case s.Charset != d.Charset && (sb == 0 || db == 0):
			odd("charset %s → %s: check that every value converts", s.Charset, d.Charset)
		}
	default:
		if s.ColumnType != d.ColumnType {
			odd("%s → %s: unusual mapping, check it", s.ColumnType, d.ColumnType)
		}
	}
	return
}

func isString(t string) bool {
	return t == "varchar" || t == "char" || textMax[t] > 0
}

// fitsLength reports whether every value of string column s fits string column d's length. CHAR and VARCHAR
// lengths count characters; the TEXT types' count bytes, in the column's charset. So a TEXT target must hold
// the source's longest value in bytes, each character at the target charset's widest (a VARCHAR(20000) of
// utf8mb4 needs up to 80,000 bytes: more than a TEXT's 65,535); a CHAR or VARCHAR target must hold it in
// characters, a TEXT source holding as many characters as bytes at most. Whether each character fits the
// target charset is checked apart.
func fitsLength(s, d Column) bool {
	if dBytes, ok := textMax[d.DataType]; ok {
		if sBytes, ok := textMax[s.DataType]; ok {
			return dBytes >= sBytes
		}
		return dBytes >= s.MaxChars*int64(max(1, charsetBytes[strings.ToLower(d.Charset)]))
	}
	sChars := s.MaxChars
	if b, ok := textMax[s.DataType]; ok {
		sChars = b
	}
	return d.MaxChars >= sChars
}
