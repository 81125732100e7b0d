// Package secretfile reads the files csmh-sync takes its secrets from (passwords, the admin token), so that
// secrets stay out of command lines (ps), the environment (/proc/PID/environ, docker inspect) and logs.
package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// Read returns the file's content without its trailing line ending. An empty secret is refused: a file left
// empty by a failed template or secret mount would otherwise mean "no password". flag names the file's flag
// in the error (e.g. "--source-password-file"); the error never contains the content, nor a path that names
// no file: an operator who gave the secret itself in place of its file's path would find it in the logs.
func Read(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if _, serr := os.Lstat(path); serr != nil {
			return "", fmt.Errorf("%s: the path given names no file (%v): give the path of a file that holds the secret (the path is not repeated here, in case it is the secret itself)", flag, err)
		}
		return "", fmt.Errorf("%s %s: %v", flag, path, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s %s is empty: write the secret into it", flag, path)
	}
	return s, nil
}

// Warning returns a sentence when users other than the file's owner can read it, "" otherwise (and when the
// file cannot be examined: Read reports that). Group read access is accepted on a file owned by root, which
// is how an administrator hands a secret to one group: Kubernetes secret volumes with an fsGroup (root, 0440),
// systemd credentials, Debian's ssl-cert group.
func Warning(flag, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	mode := fi.Mode().Perm()
	switch {
	case mode&0o004 != 0:
		return fmt.Sprintf("%s %s is readable by every user (mode %04o): chmod 600 it", flag, path, mode)
	case mode&0o040 != 0 && owner(fi) != 0:
		return fmt.Sprintf("%s %s is readable by its group (mode %04o): chmod 600 it, or give it to root with mode 0440 for a group", flag, path, mode)
	}
	return ""
}

func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}
