package verify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
	"github.com/csmh-sync/csmh-sync/verify"
)

// Both digests, on a real server, over rows crafted to collide in weaker hashes: each difference between
// CSMH and CSMHE below changes the chunk sums, and an exact copy does not.
func TestDigestsTellDifferencesApart(t *testing.T) {
	ctx := context.Background()
	s := harness.StartT(t, harness.Options{})
	if err := s.LoadEdxSchema(ctx); err != nil {
		t.Fatal(err)
	}
	db, _, err := dbconn.Open(ctx, dbconn.Endpoint{Role: "test", DSN: s.DSN("")}, dbconn.Options{MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if d := verify.DigestOf(ctx, db); d != verify.DigestCRC {
		t.Fatalf("MariaDB %s: digest %d, want the CRC digest", s.Addr(), d)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const rows = `(1, NULL, '2020-01-02 03:04:05.000006', '{"a": 1}', 1, 2, 7),
		(2, 'ab', '2020-01-02 03:04:05', 'c', NULL, 0.5, 8),
		(3, NULL, '2021-05-06 07:08:09.5', '{"b": 2}', 0.333333333333, 1, 9),
		(4, '', '2022-01-01 00:00:00', NULL, 1e-7, NULL, 10)`
	cases := []struct {
		name   string
		change string // applied to CSMHE after the copy
	}{
		{"states of equal length swapped between two rows", "UPDATE %s SET state = IF(id = 1, '{\"b\": 2}', '{\"a\": 1}') WHERE id IN (1, 3)"},
		{"one byte of a value moved into the next value", "UPDATE %s SET version = 'a', state = 'bc' WHERE id = 2"},
		{"NULL for the empty string", "UPDATE %s SET version = NULL WHERE id = 4"},
		{"the empty string for NULL", "UPDATE %s SET state = '' WHERE id = 4"},
		{"a microsecond", "UPDATE %s SET created = '2020-01-02 03:04:05.000007' WHERE id = 1"},
		{"a grade NULL for 0", "UPDATE %s SET grade = 0 WHERE id = 2"},
		{"the last digits of a double", "UPDATE %s SET grade = 0.333333333334 WHERE id = 3"},
		{"the last bit of a double", "UPDATE %s SET grade = 1.0000000000000002 WHERE id = 1"},
		{"a double's last bit beside NULL handling", "UPDATE %s SET max_grade = 0.5000000000000001 WHERE id = 2"},
		{"ids swapped between two rows", "UPDATE %s SET id = CASE id WHEN 1 THEN 5 WHEN 3 THEN 1 END WHERE id IN (1, 3) ORDER BY id; UPDATE %s SET id = 3 WHERE id = 5"},
	}
	for _, d := range []verify.Digest{verify.DigestMD5, verify.DigestCRC, verify.DigestCRCTwice} {
		sum := func() (string, string) {
			a, b, err := verify.ChunkSums(ctx, db, srcName, dstName, d, 0, 100)
			if err != nil {
				t.Fatalf("digest %d: %v", d, err)
			}
			return a, b
		}
		reset := func() {
			exec("DELETE FROM " + harness.SourceTable)
			exec("DELETE FROM " + harness.TargetTable)
			exec("INSERT INTO " + harness.SourceTable + " (id, version, created, state, grade, max_grade, student_module_id) VALUES " + rows)
			exec("INSERT INTO " + harness.TargetTable + " (" + cols + ") SELECT " + cols + " FROM " + harness.SourceTable)
		}
		reset()
		if a, b := sum(); a != b || !strings.HasPrefix(a, "{n:4 ") {
			t.Fatalf("digest %d: an exact copy sums to %+v and %+v", d, a, b)
		}
		if d == verify.DigestCRC {
			// The head printed once, through the session variable, hashes as the head printed for each CRC.
			once, _ := sum()
			twice, _, err := verify.ChunkSums(ctx, db, srcName, dstName, verify.DigestCRCTwice, 0, 100)
			if err != nil || once != twice {
				t.Fatalf("the CRC digest sums to %s with the head printed once and to %s (%v) with it printed twice", once, twice, err)
			}
		}
		for _, c := range cases {
			reset()
			for _, q := range strings.Split(strings.ReplaceAll(c.change, "%s", harness.TargetTable), "; ") {
				exec(q)
			}
			if a, b := sum(); a == b {
				t.Errorf("digest %d: %s: both sides sum to %+v", d, c.name, a)
			}
		}
	}
}
