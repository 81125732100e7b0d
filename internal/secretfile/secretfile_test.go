package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A secret other users can read is named in one warning line; a file only its owner reads, or a root-owned
// file its group reads (a Kubernetes secret volume with an fsGroup), is not.
func TestWarning(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	owners := []int{os.Geteuid()}
	if os.Geteuid() == 0 {
		owners = append(owners, 65534) // as root, also a file of another user's
	}
	for _, uid := range owners {
		if err := os.Chown(p, uid, -1); err != nil {
			t.Fatal(err)
		}
		groupOK := uid == 0
		for _, tc := range []struct {
			mode os.FileMode
			want string // "" = no warning
		}{
			{0o600, ""},
			{0o400, ""},
			{0o644, "readable by every user (mode 0644)"},
			{0o604, "readable by every user"},
			{0o640, map[bool]string{true: "", false: "readable by its group (mode 0640)"}[groupOK]},
			{0o440, map[bool]string{true: "", false: "readable by its group"}[groupOK]},
		} {
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			got := Warning("--source-password-file", p)
			if tc.want == "" && got != "" || tc.want != "" && (!strings.Contains(got, tc.want) || !strings.HasPrefix(got, "--source-password-file "+p)) {
				t.Errorf("mode %04o, owner uid %d: warning %q, want %q", tc.mode, uid, got, tc.want)
			}
			if strings.Contains(got, "s3cret") || strings.Contains(got, "\n") {
				t.Errorf("warning %q: one line, never the secret", got)
			}
		}
	}
	if got := Warning("--x", filepath.Join(dir, "missing")); got != "" {
		t.Errorf("missing file: %q (Read reports it)", got)
	}
}

// Read strips the line ending, refuses an empty secret and names the flag, never the content.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	for content, want := range map[string]string{"tok\n": "tok", "tok\r\n": "tok", "tok": "tok", " tok \n\n": " tok "} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := Read("--admin-token-file", p); err != nil || got != want {
			t.Errorf("Read(%q) = %q, %v; want %q", content, got, err, want)
		}
	}
	for _, content := range []string{"", "\n", "\r\n\r\n"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Read("--admin-token-file", p); err == nil || !strings.Contains(err.Error(), "--admin-token-file "+p+" is empty") {
			t.Errorf("Read(%q): %v, want refused as empty", content, err)
		}
	}
	if _, err := Read("--admin-token-file", filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "--admin-token-file: ") {
		t.Errorf("missing file: %v", err)
	}
	// The secret given in place of the path: the error names the flag and the fix, never the secret.
	for _, secret := range []string{"s3cr3t-Pa55", "pa/ss/word", "pw with spaces", dir + "/s3cr3t/x"} {
		_, err := Read("--source-password-file", secret)
		if err == nil || strings.Contains(err.Error(), secret) || !strings.HasPrefix(err.Error(), "--source-password-file: ") ||
			!strings.Contains(err.Error(), "give the path of a file") || strings.Contains(err.Error(), "\n") {
			t.Errorf("Read of the secret %q as a path: %v; want one line naming the flag and the fix, without the secret", secret, err)
		}
	}
	// A file that exists but cannot be read is named: its path is no secret.
	if _, err := Read("--admin-token-file", dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("a directory as the file: %v, want its path named", err)
	}
}
