package gtid

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FilePrefix marks a binlog file/position where a checkpoint holds a stream position: no GTID set or
// MariaDB GTID starts with it, so the two modes can never be mistaken for each other.
const FilePrefix = "file:"

// FilePos is a position in a source's binlog without GTIDs: the binlog file name and the byte offset in it
// of the next event to read, i.e. the end of the last event read. A stream position is only ever the end of a
// transaction (its XID or COMMIT event) or the head of a new file after a rotation.
//
// A FilePos means something only on the server that wrote the file: another server's binlog.000042 is a
// different file. Callers keep the server's identity beside it (see the checkpoint's source_server).
type FilePos struct {
	File string
	Pos  uint64
	// Created is when the server created the file: the header timestamp of its Format_description event, in
	// whole seconds of the source's clock, or 0 when unknown. It tells the file from a later one of the same
	// name (after RESET MASTER, binlog.000001 is written again from offset 4). Comparisons ignore it.
	Created uint32
}

// ErrFileNames means two binlog file names cannot be ordered: their base names differ (log_bin_basename
// changed, or the positions come from different servers), or one has no numeric extension.
var ErrFileNames = errors.New("binlog file names cannot be ordered")

// ParseFilePos reads "name:offset", with or without FilePrefix ("file:binlog.000003:1234"), and the file's
// creation time after the offset where the checkpoint stores it ("file:binlog.000003:1234@1733612345").
func ParseFilePos(s string) (FilePos, error) {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), FilePrefix))
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return FilePos{}, fmt.Errorf("parse binlog position %q: want file:offset, e.g. binlog.000003:1234", s)
	}
	name, off := s[:i], s[i+1:]
	var created uint64
	if j := strings.IndexByte(off, '@'); j >= 0 {
		var err error
		if created, err = strconv.ParseUint(off[j+1:], 10, 32); err != nil || created == 0 {
			return FilePos{}, fmt.Errorf("parse binlog position %q: the file's creation time %q is not a Unix time", s, off[j+1:])
		}
		off = off[:j]
	}
	pos, err := strconv.ParseUint(off, 10, 64)
	if err != nil {
		return FilePos{}, fmt.Errorf("parse binlog position %q: the offset %q is not a decimal number", s, off)
	}
	if _, _, err := fileSeq(name); err != nil {
		return FilePos{}, fmt.Errorf("parse binlog position %q: %w", s, err)
	}
	return FilePos{File: name, Pos: pos, Created: uint32(created)}, nil
}

// IsFilePos reports whether a stored stream position is a file/position (else it is a GTID position).
func IsFilePos(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), FilePrefix) }

// String renders the position as the checkpoint stores it: FilePrefix, the file name, ':', the offset, and
// '@' and the file's creation time when known.
func (p FilePos) String() string {
	s := FilePrefix + p.File + ":" + strconv.FormatUint(p.Pos, 10)
	if p.Created != 0 {
		s += "@" + strconv.FormatUint(uint64(p.Created), 10)
	}
	return s
}

// SameFile reports whether created, the creation time of a file named p.File on the source now, is that of the
// file p was read from. An unknown time on either side (a position from an older checkpoint, or from SHOW
// BINARY LOG STATUS) cannot tell, and passes.
func (p FilePos) SameFile(created uint32) bool {
	return p.Created == 0 || created == 0 || p.Created == created
}

// IsZero reports whether p is unset.
func (p FilePos) IsZero() bool { return p.File == "" }

// Compare orders two positions of one server's binlog: -1, 0 or +1. Files order by their numeric extension,
// not as strings: the server goes from binlog.999999 to binlog.1000000.
func (p FilePos) Compare(o FilePos) (int, error) {
	c, err := CompareFiles(p.File, o.File)
	if err != nil || c != 0 {
		return c, err
	}
	switch {
	case p.Pos < o.Pos:
		return -1, nil
	case p.Pos > o.Pos:
		return 1, nil
	}
	return 0, nil
}

// CompareFiles orders two binlog file names of one server by their numeric extension.
func CompareFiles(a, b string) (int, error) {
	ba, na, err := fileSeq(a)
	if err != nil {
		return 0, err
	}
	bb, nb, err := fileSeq(b)
	if err != nil {
		return 0, err
	}
	if ba != bb {
		return 0, fmt.Errorf("%w: %q and %q have different base names", ErrFileNames, a, b)
	}
	switch {
	case na < nb:
		return -1, nil
	case na > nb:
		return 1, nil
	}
	return 0, nil
}

// fileSeq splits a binlog file name into its base and numeric extension ("mysql-bin.000012" → "mysql-bin",
// 12). The server pads the extension to six digits and widens it past 999999.
func fileSeq(name string) (string, uint64, error) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "", 0, fmt.Errorf("%w: %q has no numeric extension", ErrFileNames, name)
	}
	ext := name[i+1:]
	for _, c := range ext {
		if c < '0' || c > '9' {
			return "", 0, fmt.Errorf("%w: %q has no numeric extension", ErrFileNames, name)
		}
	}
	n, err := strconv.ParseUint(ext, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %q: %v", ErrFileNames, name, err)
	}
	return name[:i], n, nil
}

// FileState is where a file position lies in the list of binlog files a server still has.
type FileState int

const (
	FileHeld    FileState = iota // the file is there and the offset within it
	FilePurged                   // the file is older than the oldest one left
	FilePastEnd                  // the file is there but shorter than the offset: another server, or a restored backup
	FileUnknown                  // the server never had such a file (another server, or another base name)
)

// Locate places p among a server's binlog files, oldest first, as SHOW BINARY LOGS lists them (names and
// sizes in bytes).
func Locate(p FilePos, names []string, sizes []uint64) FileState {
	for i, n := range names {
		if n != p.File {
			continue
		}
		if i < len(sizes) && p.Pos > sizes[i] {
			return FilePastEnd
		}
		return FileHeld
	}
	if len(names) > 0 {
		if c, err := CompareFiles(p.File, names[0]); err == nil && c < 0 {
			return FilePurged
		}
	}
	return FileUnknown
}
