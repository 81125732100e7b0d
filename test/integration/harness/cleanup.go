package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Directory name prefixes under os.TempDir(); the owning process's pid follows, then a random suffix.
const (
	templatePrefix = "csmh-harness-template-"
	serverPrefix   = "csmh-mariadbd-"
)

// Cleanup removes the template data directory. TestMain calls it after m.Run; a later Start rebuilds it.
func Cleanup() {
	templateMu.Lock()
	defer templateMu.Unlock()
	if templateDir != "" {
		_ = os.RemoveAll(templateDir)
		templateDir = ""
	}
}

// removeStale deletes directories left by harness processes that died without cleaning up (a test binary
// killed by go test's timeout, say). A directory is removed only if the process that made it is gone and,
// for a server, so is the mariadbd named in its pid file; Pdeathsig makes the second follow from the first.
func removeStale() {
	for _, prefix := range []string{templatePrefix, serverPrefix} {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
		for _, dir := range dirs {
			owner, ok := ownerPID(filepath.Base(dir), prefix)
			if !ok || alive(owner) {
				continue // not a name this harness writes, or still in use
			}
			if b, err := os.ReadFile(filepath.Join(dir, "mysqld.pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && alive(pid) {
					continue
				}
			}
			_ = os.RemoveAll(dir)
		}
	}
}

// ownerPID parses "<prefix><pid>-<random>".
func ownerPID(name, prefix string) (int, bool) {
	pid, _, ok := strings.Cut(strings.TrimPrefix(name, prefix), "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(pid)
	return n, err == nil && n > 0
}

// alive reports whether a process with this pid exists (EPERM: it exists but belongs to someone else).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
