package harness

import "testing"

// A failed bootstrap shows what went wrong: the error lines from before the output's tail, then the tail, each
// line once.
func TestErrorsAndTail(t *testing.T) {
	out := "Installing MariaDB/MySQL system tables\n[ERROR] InnoDB: Cannot allocate memory\nline a\nERROR: 1 in tail\nline b\n"
	want := "[ERROR] InnoDB: Cannot allocate memory\nERROR: 1 in tail\nline b"
	if got := errorsAndTail(out, 2); got != want {
		t.Errorf("errorsAndTail(…, 2) = %q, want %q", got, want)
	}
	if got := errorsAndTail("one\ntwo\n", 20); got != "one\ntwo" {
		t.Errorf("short output: %q, want it whole", got)
	}
}
