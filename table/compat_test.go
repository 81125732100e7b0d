package table

import "testing"

// String lengths are compared as the server counts them: CHAR/VARCHAR in characters, the TEXT types in bytes.
func TestFitsLength(t *testing.T) {
	vc := func(n int64, cs string) Column { return Column{DataType: "varchar", MaxChars: n, Charset: cs} }
	txt := func(typ, cs string) Column { return Column{DataType: typ, Charset: cs} }
	for _, c := range []struct {
		name string
		s, d Column
		want bool
	}{
		{"same varchar", vc(255, "utf8mb4"), vc(255, "utf8mb4"), true},
		{"wider varchar", vc(255, "utf8mb4"), vc(300, "utf8mb4"), true},
		{"narrower varchar", vc(255, "utf8mb4"), vc(100, "utf8mb4"), false},
		{"same text", txt("longtext", "utf8mb4"), txt("longtext", "utf8mb4"), true},
		{"mediumtext into text", txt("mediumtext", "utf8mb4"), txt("text", "utf8mb4"), false},
		{"text into longtext", txt("text", "utf8mb4"), txt("longtext", "utf8mb4"), true},
		// 20,000 characters of up to 4 bytes: 80,000 bytes, more than TEXT's 65,535 (the check before compared
		// 20,000 characters with 65,535 bytes and let it pass).
		{"varchar(20000) utf8mb4 into text", vc(20000, "utf8mb4"), txt("text", "utf8mb4"), false},
		{"varchar(20000) utf8mb4 into mediumtext", vc(20000, "utf8mb4"), txt("mediumtext", "utf8mb4"), true},
		{"varchar(255) utf8mb4 into tinytext", vc(255, "utf8mb4"), txt("tinytext", "utf8mb4"), false},
		{"varchar(255) latin1 into tinytext latin1", vc(255, "latin1"), txt("tinytext", "latin1"), true},
		// A TEXT of 65,535 bytes may hold 65,535 one-byte characters.
		{"text into varchar(65535)", txt("text", "utf8mb4"), vc(65535, "utf8mb4"), true},
		{"text into varchar(20000)", txt("text", "utf8mb4"), vc(20000, "utf8mb4"), false},
		{"tinytext into varchar(255)", txt("tinytext", "utf8mb4"), vc(255, "utf8mb4"), true},
	} {
		if got := fitsLength(c.s, c.d); got != c.want {
			t.Errorf("%s: fitsLength = %v, want %v", c.name, got, c.want)
		}
	}
}
