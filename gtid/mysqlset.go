package gtid

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// A MySQL GTID set, tagged GTIDs included.
//
// MySQL 8.3 added tags (MySQL 8.4 Reference Manual, "GTID Format and Storage",
// https://dev.mysql.com/doc/refman/8.4/en/replication-gtids-concepts.html): a GTID is source_id:tag:transaction_id
// as well as source_id:transaction_id, and in a set a tag applies to the intervals after it, up to the next tag
// or the next source: gtid_executed prints "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:domain_1:1-3:15-21".
// GTIDs of one source with different tags, or none, are different transactions, like GTIDs of different
// sources. Tags are 1 to 32 characters, a letter or underscore then letters, digits and underscores, and not
// case-sensitive: the server prints them in lower case. go-mysql v1.13.0's MysqlGTIDSet reads none of this
// (it takes a tag for a malformed interval), so the set is kept here: one interval list per (uuid, tag).
type mysqlSet map[tsid]gomysql.IntervalSlice

// tsid is MySQL's "transaction source identifier": the source's uuid, and the tag ("" untagged).
type tsid struct{ uuid, tag string }

var (
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	tagRE  = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)
)

// parseMySQL reads a GTID set in MySQL's syntax: uuid_set[,uuid_set…], each uuid(:interval|:tag)… where every
// tag is followed by at least one interval. Upper case, repeated sources and overlapping intervals are
// accepted, as the server accepts them.
func parseMySQL(s string) (mysqlSet, error) {
	out := mysqlSet{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		fields := strings.Split(part, ":")
		u := strings.ToLower(fields[0])
		if len(u) == 32 && !strings.Contains(u, "-") {
			u = u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32]
		}
		if !uuidRE.MatchString(u) {
			return nil, fmt.Errorf("parse MySQL GTID set %q: %q is not a server uuid", s, fields[0])
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("parse MySQL GTID set %q: %q has no transaction numbers (want uuid:1-5 or uuid:tag:1-5)", s, part)
		}
		tag, tagOpen := "", false // tagOpen: a tag not yet followed by an interval
		for _, f := range fields[1:] {
			if lf := strings.ToLower(f); tagRE.MatchString(lf) {
				if tagOpen {
					return nil, fmt.Errorf("parse MySQL GTID set %q: tag %q has no transaction numbers", s, tag)
				}
				tag, tagOpen = lf, true
				continue
			}
			iv, err := parseInterval(f)
			if err != nil {
				return nil, fmt.Errorf("parse MySQL GTID set %q: %v", s, err)
			}
			out.insert(tsid{u, tag}, iv)
			tagOpen = false
		}
		if tagOpen {
			return nil, fmt.Errorf("parse MySQL GTID set %q: tag %q has no transaction numbers", s, tag)
		}
	}
	return out, nil
}

// parseInterval reads "n" or "n-m" (1 ≤ n ≤ m) into go-mysql's half-open form.
func parseInterval(s string) (gomysql.Interval, error) {
	lo, hi, ranged := strings.Cut(s, "-")
	a, err := strconv.ParseInt(lo, 10, 64)
	b := a
	if err == nil && ranged {
		b, err = strconv.ParseInt(hi, 10, 64)
	}
	if err != nil || a < 1 || b < a || b == 1<<63-1 {
		return gomysql.Interval{}, fmt.Errorf("%q is not a transaction number or range (n or n-m, 1 ≤ n ≤ m)", s)
	}
	return gomysql.Interval{Start: a, Stop: b + 1}, nil
}

func (m mysqlSet) insert(k tsid, iv gomysql.Interval) {
	m[k] = append(m[k], iv).Normalize()
}

// String prints the set as the server does: sources in uuid order, each with its untagged intervals first and
// then its tags in order, each tag before its intervals. An untagged set prints exactly as go-mysql prints it,
// so checkpoints written before tags were understood read and print unchanged.
func (m mysqlSet) String() string {
	byUUID := map[string][]string{} // uuid → its tags ("" first)
	for k := range m {
		byUUID[k.uuid] = append(byUUID[k.uuid], k.tag)
	}
	uuids := make([]string, 0, len(byUUID))
	for u := range byUUID {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	var b strings.Builder
	for i, u := range uuids {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(u)
		tags := byUUID[u]
		sort.Strings(tags)
		for _, tag := range tags {
			if tag != "" {
				b.WriteString(":" + tag)
			}
			for _, iv := range m[tsid{u, tag}] {
				b.WriteString(":" + iv.String())
			}
		}
	}
	return b.String()
}

// contains reports whether every transaction of o is in m.
func (m mysqlSet) contains(o mysqlSet) bool {
	for k, ivs := range o {
		if !m[k].Contain(ivs) {
			return false
		}
	}
	return true
}

// add merges every transaction of o into m.
func (m mysqlSet) add(o mysqlSet) {
	for k, ivs := range o {
		for _, iv := range ivs {
			m.insert(k, iv)
		}
	}
}

// behind counts the transactions of executed that m lacks.
func (m mysqlSet) behind(executed mysqlSet) int64 {
	var n int64
	for k, ivs := range executed {
		for _, iv := range ivs {
			n += missing(iv, m[k])
		}
	}
	return n
}

func (m mysqlSet) clone() mysqlSet {
	out := make(mysqlSet, len(m))
	for k, ivs := range m {
		out[k] = append(gomysql.IntervalSlice(nil), ivs...)
	}
	return out
}

// tagged reports whether any GTID of the set carries a tag.
func (m mysqlSet) tagged() bool {
	for k := range m {
		if k.tag != "" {
			return true
		}
	}
	return false
}
