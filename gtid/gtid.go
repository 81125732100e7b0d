// Package gtid models replication positions for both server families and the comparisons csmh-sync
// needs: "does the checkpoint contain what the source executed?", "is the position still in the binlog?",
// and "how many transactions behind are we?".
//
// MySQL positions are GTID sets (uuid:1-100:102,uuid2:1-5). MariaDB positions are one GTID per replication
// domain (domain-server-seq); under gtid_strict_mode sequence numbers only grow within a domain, so a
// position is compared domain by domain on the sequence number alone, whichever server wrote it.
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
	mysql   *gomysql.MysqlGTIDSet
	mariadb map[uint32]gomysql.MariadbGTID // domain → last GTID
}

// Empty returns an empty position of the flavor ("mysql" or "mariadb").
func Empty(flavor string) (*Set, error) { return Parse(flavor, "") }

// Parse reads a position in the server's own syntax.
func Parse(flavor, s string) (*Set, error) {
	s = strings.Join(strings.Fields(s), "")
	switch flavor {
	case gomysql.MySQLFlavor:
		g, err := gomysql.ParseMysqlGTIDSet(s)
		if err != nil {
			return nil, fmt.Errorf("parse MySQL GTID set %q: %v", s, err)
		}
		return &Set{flavor: flavor, mysql: g.(*gomysql.MysqlGTIDSet)}, nil
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

// IsEmpty reports whether the position holds no transaction.
func (s *Set) IsEmpty() bool {
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.IsEmpty()
	}
	return len(s.mariadb) == 0
}

// Clone returns an independent copy.
func (s *Set) Clone() *Set {
	out, _ := Parse(s.flavor, s.String())
	return out
}

// Contains reports whether every transaction of o is also in s.
func (s *Set) Contains(o *Set) bool {
	if s.flavor != o.flavor {
		return false
	}
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.Contain(o.mysql)
	}
	for d, g := range o.mariadb {
		mine, ok := s.mariadb[d]
		if !ok || mine.SequenceNumber < g.SequenceNumber {
			return false
		}
	}
	return true
}

// Add records one transaction: "uuid:n" for MySQL, "domain-server-seq" for MariaDB.
func (s *Set) Add(one string) error {
	if s.flavor == gomysql.MySQLFlavor {
		if err := s.mysql.Update(one); err != nil {
			return fmt.Errorf("add GTID %q: %v", one, err)
		}
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
func (s *Set) Behind(executed *Set) int64 {
	if s.flavor != executed.flavor {
		return -1
	}
	var n int64
	if s.flavor == gomysql.MySQLFlavor {
		for sid, uset := range executed.mysql.Sets {
			var have gomysql.IntervalSlice
			if mine, ok := s.mysql.Sets[sid]; ok {
				have = mine.Intervals
			}
			for _, iv := range uset.Intervals {
				n += missing(iv, have)
			}
		}
		return n
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

// GoMySQL returns the position as go-mysql's GTIDSet, the form BinlogSyncer.StartSyncGTID takes.
func (s *Set) GoMySQL() gomysql.GTIDSet {
	if s.flavor == gomysql.MySQLFlavor {
		return s.mysql.Clone()
	}
	g, _ := gomysql.ParseMariadbGTIDSet(s.String())
	return g
}
