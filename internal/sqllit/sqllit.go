// Package sqllit writes SQL literals into statement text. csmh-sync builds multi-row statements as text
// (one round trip, no 65,535-placeholder limit); its sessions pin a sql_mode without NO_BACKSLASH_ESCAPES,
// which the escaping here relies on.
package sqllit

import (
	"strconv"
	"strings"
)

// Quote appends v as a quoted string literal. Bytes are copied unchanged (binary-safe).
func Quote(sb *strings.Builder, v []byte) {
	sb.Grow(len(v) + 2)
	sb.WriteByte('\'')
	start := 0
	for i, c := range v {
		var esc string
		switch c {
		case 0:
			esc = `\0`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\\':
			esc = `\\`
		case '\'':
			esc = `\'`
		case 0x1a:
			esc = `\Z`
		default:
			continue
		}
		sb.Write(v[start:i])
		sb.WriteString(esc)
		start = i + 1
	}
	sb.Write(v[start:])
	sb.WriteByte('\'')
}

// Value appends a Go value decoded from a binlog row: nil → NULL, integers and floats exactly (a float64
// prints with the fewest digits that read back as the same double), strings and bytes quoted.
func Value(sb *strings.Builder, v any) bool {
	var buf [32]byte
	switch x := v.(type) {
	case nil:
		sb.WriteString("NULL")
	case int8:
		sb.Write(strconv.AppendInt(buf[:0], int64(x), 10))
	case int16:
		sb.Write(strconv.AppendInt(buf[:0], int64(x), 10))
	case int32:
		sb.Write(strconv.AppendInt(buf[:0], int64(x), 10))
	case int64:
		sb.Write(strconv.AppendInt(buf[:0], x, 10))
	case int:
		sb.Write(strconv.AppendInt(buf[:0], int64(x), 10))
	case uint8:
		sb.Write(strconv.AppendUint(buf[:0], uint64(x), 10))
	case uint16:
		sb.Write(strconv.AppendUint(buf[:0], uint64(x), 10))
	case uint32:
		sb.Write(strconv.AppendUint(buf[:0], uint64(x), 10))
	case uint64:
		sb.Write(strconv.AppendUint(buf[:0], x, 10))
	case float64:
		sb.Write(strconv.AppendFloat(buf[:0], x, 'g', -1, 64))
	case float32:
		sb.Write(strconv.AppendFloat(buf[:0], float64(x), 'g', -1, 32))
	case string:
		Quote(sb, []byte(x))
	case []byte:
		Quote(sb, x)
	default:
		return false
	}
	return true
}
