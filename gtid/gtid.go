// Package gtid models replication positions for both server families and the comparisons csmh-sync
// needs: "does the checkpoint contain what the source executed?", "is the position still in the binlog?",
// and "how many transactions behind are we?".
//
// MySQL positions are GTID sets (uuid:1-100:102,uuid2:1-5), tagged GTIDs (uuid:tag:1-5, MySQL 8.3+)
// included. MariaDB positions are one GTID per replication domain (domain-server-seq); under
// gtid_strict_mode sequence numbers only grow within a domain, so a position is compared domain by domain on
// the sequence number alone, whichever server wrote it.
//
// A source without GTIDs (MySQL with gtid_mode=OFF, or --position file) is followed by binlog file and
// offset instead (FilePos, "file:binlog.000003:1234"). A Set then holds one FilePos, and "contains" means
// "is at or after": every transaction that ends at or before the position is applied.
package gtid

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// Set is a replication position of one flavor. The zero value is not usable; use Parse or Empty.
type Set struct {
	flavor  string
	mysql   mysqlSet                       // uuid (and tag) → intervals; see mysqlset.go
	mariadb map[uint32]gomysql.MariadbGTID // domain → last GTID
	file    *FilePos                       // file mode: the position after the last transaction
}

// Empty returns an empty position of the flavor ("mysql" or "mariadb").
func Empty(flavor string) (*Set, error) { return Parse(flavor, "") }

// Parse reads a position in the server's own syntax.
//
// A position starting with FilePrefix is a binlog file/position of a server of the flavor.
func Parse(flavor, s string) (*Set, error) {
	s = strings.Join(strings.Fields(s), "")
	if IsFilePos(s) {
		if flavor != gomysql.MySQLFlavor && flavor != gomysql.MariaDBFlavor {
			return nil, fmt.Errorf("unknown flavor %q (want mysql or mariadb)", flavor)
		}
		p, err := ParseFilePos(s)
		if err != nil {
			return nil, err
		}
		return &Set{flavor: flavor, file: &p}, nil
	}
	switch flavor {
	case gomysql.MySQLFlavor:
		m, err := parseMySQL(s)
		if err != nil {
			return nil, err
		}
		return &Set{flavor: flavor, mysql: m}, nil
	case gomysql.MariaDBFlavor:
		out := &Set{flavor: flavor, mariadb: map[uint32]gomysql.MariadbGTID{}}
		if s == "" {
			return out, nil
		}
		for _, part := range strings.Split(s, ",") {
			g, err := parseMariaDB(part)
			if err != nil {
				return nil, err
			}
			if cur, ok := out.mariadb[g.DomainID]; !ok || g.SequenceNumber > cur.SequenceNumber {
				out.mariadb[g.DomainID] = g
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown flavor %q (want mysql or mariadb)", flavor)
}

func parseMariaDB(s string) (gomysql.MariadbGTID, error) {
	var g gomysql.MariadbGTID
	p := strings.Split(s, "-")
	if len(p) != 3 {
		return g, fmt.Errorf("parse MariaDB GTID %q: want domain-server-sequence", s)
	}
	d, err1 := strconv.ParseUint(p[0], 10, 32)
	sv, err2 := strconv.ParseUint(p[1], 10, 32)
	seq, err3 := strconv.ParseUint(p[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return g, fmt.Errorf("parse MariaDB GTID %q: want three decimal numbers", s)
	}
	return gomysql.MariadbGTID{DomainID: uint32(d), ServerID: uint32(sv), SequenceNumber: seq}, nil
}

// Flavor returns "mysql" or "mariadb".
func (s *Set) Flavor() string { return s.flavor }

// String renders the position in the server's syntax, sorted, so equal positions print equally.
func (s *Set) String() string {
	if s.file != nil {
		return s.file.String()
	}
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.String()
	}
	doms := make([]uint32, 0, len(s.mariadb))
	for d := range s.mariadb {
		doms = append(doms, d)
	}
	sort.Slice(doms, func(i, j int) bool { return doms[i] < doms[j] })
	parts := make([]string, len(doms))
	for i, d := range doms {
		g := s.mariadb[d]
		parts[i] = fmt.Sprintf("%d-%d-%d", g.DomainID, g.ServerID, g.SequenceNumber)
	}
	return strings.Join(parts, ",")
}

// IsFile reports whether the position is a binlog file/position rather than GTIDs.
func (s *Set) IsFile() bool { return s.file != nil }

// FilePos returns the file/position of a file-mode position.
func (s *Set) FilePos() (FilePos, bool) {
	if s.file == nil {
		return FilePos{}, false
	}
	return *s.file, true
}

// IsEmpty reports whether the position holds no transaction. A file position is never empty: it names a
// point in the binlog, which is what a first start captures.
func (s *Set) IsEmpty() bool {
	if s.file != nil {
		return false
	}
	if s.flavor == gomysql.MySQLFlavor {
		return len(s.mysql) == 0
	}
	return len(s.mariadb) == 0
}

// Clone returns an independent copy.
func (s *Set) Clone() *Set {
	out, _ := Parse(s.flavor, s.String())
	return out
}

// Contains reports whether every transaction of o is also in s.
//
// For file positions: s is at or after o in the same server's binlog. Positions of different kinds, or file
// names that cannot be ordered, contain nothing of each other.
func (s *Set) Contains(o *Set) bool {
	if s.flavor != o.flavor || (s.file == nil) != (o.file == nil) {
		return false
	}
	if s.file != nil {
		c, err := s.file.Compare(*o.file)
		return err == nil && c >= 0
	}
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.contains(o.mysql)
	}
	for d, g := range o.mariadb {
		mine, ok := s.mariadb[d]
		if !ok || mine.SequenceNumber < g.SequenceNumber {
			return false
		}
	}
	return true
}

// Add records one transaction: "uuid:n" or "uuid:tag:n" for MySQL, "domain-server-seq" for MariaDB; in file mode the
// position after it ("file:name:offset"), which moves the position forward (never back).
func (s *Set) Add(one string) error {
	if s.file != nil || IsFilePos(one) {
		if s.file == nil || !IsFilePos(one) {
			return fmt.Errorf("add %q to %q: a GTID and a binlog file position do not mix", one, s.String())
		}
		p, err := ParseFilePos(one)
		if err != nil {
			return err
		}
		c, err := p.Compare(*s.file)
		if err != nil {
			return fmt.Errorf("add %q to %q: %w", one, s.String(), err)
		}
		if c > 0 || (c == 0 && s.file.Created == 0) {
			s.file = &p
		}
		return nil
	}
	if s.flavor == gomysql.MySQLFlavor {
		m, err := parseMySQL(one)
		if err != nil {
			return fmt.Errorf("add GTID %q: %v", one, err)
		}
		s.mysql.add(m)
		return nil
	}
	g, err := parseMariaDB(one)
	if err != nil {
		return err
	}
	if cur, ok := s.mariadb[g.DomainID]; !ok || g.SequenceNumber >= cur.SequenceNumber {
		s.mariadb[g.DomainID] = g
	}
	return nil
}

// Behind counts the transactions in executed that are not in s. For MariaDB it is the sequence distance
// per domain, which counts every transaction of the domain (it cannot tell tables apart).
//
// For file positions it counts bytes of binlog, not transactions: the distance within one file, and when
// the source has moved to a later file, the bytes written to that file alone (a lower bound: the rest of the
// earlier files is not known here).
func (s *Set) Behind(executed *Set) int64 {
	if s.flavor != executed.flavor || (s.file == nil) != (executed.file == nil) {
		return -1
	}
	if s.file != nil {
		c, err := s.file.Compare(*executed.file)
		switch {
		case err != nil:
			return -1
		case c >= 0:
			return 0
		case s.file.File == executed.file.File:
			return int64(executed.file.Pos - s.file.Pos)
		}
		return int64(executed.file.Pos)
	}
	var n int64
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.behind(executed.mysql)
	}
	for d, g := range executed.mariadb {
		mine := s.mariadb[d]
		if g.SequenceNumber > mine.SequenceNumber {
			n += int64(g.SequenceNumber - mine.SequenceNumber)
		}
	}
	return n
}

// missing counts the numbers of the half-open interval iv that no interval of have covers.
func missing(iv gomysql.Interval, have gomysql.IntervalSlice) int64 {
	n := iv.Stop - iv.Start
	for _, h := range have {
		lo, hi := max(iv.Start, h.Start), min(iv.Stop, h.Stop)
		if hi > lo {
			n -= hi - lo
		}
	}
	return n
}

// Tagged reports whether a MySQL set holds a tagged GTID (uuid:tag:n, MySQL 8.3+).
func (s *Set) Tagged() bool {
	return s.file == nil && s.flavor == gomysql.MySQLFlavor && s.mysql.tagged()
}

// TaggedUnsupported says why a GTID set with tagged GTIDs cannot be streamed from, and what to do instead:
// preflight's failure, run's refusal and the stream's stop share it.
const TaggedUnsupported = "tagged GTIDs (uuid:tag:n, MySQL 8.3+), which csmh-sync's binlog client (go-mysql v1.13.0) cannot ask the source to stream from: follow binlog file and offset instead (--position file, from a first start; docs/runbook.md, \"Recover from a purged binlog\", says how to start over)"

// GoMySQL returns the position as go-mysql's GTIDSet, the form BinlogSyncer.StartSyncGTID takes.
// A file position has none (nil): stream it with StartSync from FilePos. Nor has a set with tagged GTIDs
// (nil): go-mysql v1.13.0's MysqlGTIDSet cannot hold a tag, and BinlogSyncer asserts that type on every
// GTID event, so no set of another type can stand in for it; check Tagged first.
func (s *Set) GoMySQL() gomysql.GTIDSet {
	if s.file != nil || s.Tagged() {
		return nil
	}
	if s.flavor == gomysql.MySQLFlavor {
		g, _ := gomysql.ParseMysqlGTIDSet(s.String())
		return g
	}
	g, _ := gomysql.ParseMariadbGTIDSet(s.String())
	return g
}
