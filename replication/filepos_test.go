package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/metrics"
)

// anonymousGTID is the body of the Anonymous_GTID event MySQL 5.7+ writes before every transaction when
// gtid_mode=OFF: the Gtid_log_event layout with a zero SID and GNO 0 (MySQL 8.0's, 79 bytes with the header).
func anonymousGTID(t *testing.T) *replication.GTIDEvent {
	t.Helper()
	data := []byte{0x01}
	data = append(data, make([]byte, 16)...)         // SID: none
	data = binary.LittleEndian.AppendUint64(data, 0) // GNO: none
	data = append(data, replication.LogicalTimestampTypeCode)
	data = binary.LittleEndian.AppendUint64(data, 4) // last_committed
	data = binary.LittleEndian.AppendUint64(data, 5) // sequence_number
	ts := binary.LittleEndian.AppendUint64(nil, 1764633600123456)
	data = append(data, ts[:7]...)
	data = append(data, 190)
	data = binary.LittleEndian.AppendUint32(data, 80040)
	ev := &replication.GTIDEvent{}
	if err := ev.Decode(data); err != nil {
		t.Fatal(err)
	}
	return ev
}

// The events of a MySQL 8.0 binlog with gtid_mode=OFF, at the offsets SHOW BINLOG EVENTS lists for a fresh
// binlog.000003: Format_desc 4→126, Previous_gtids 126→157, then one transaction (Anonymous_Gtid 157→236,
// BEGIN 236→315, Xid 315→346) of another table, a heartbeat, and the rotation to binlog.000004. The position
// moves past the file header, names the transaction by where it starts, ends it at its Xid's end, ignores the
// heartbeat, and follows the rotation to the next file's head; the batch counts one transaction.
func TestFileModeStreamsMySQLWithoutGTIDs(t *testing.T) {
	r := &Replicator{m: metrics.New(prometheus.NewRegistry())}
	out := make(chan *txn, 16)
	s := &streamer{r: r, out: out, gate: newByteGate(1 << 20), fileMode: true, file: "binlog.000003"}
	ctx := context.Background()
	h := func(typ replication.EventType, end, size uint32) *replication.EventHeader {
		return &replication.EventHeader{Timestamp: 1764633600, EventType: typ, ServerID: 1, LogPos: end, EventSize: size}
	}
	events := []*replication.BinlogEvent{
		{Header: h(replication.ROTATE_EVENT, 0, 43), Event: &replication.RotateEvent{Position: 4, NextLogName: []byte("binlog.000003")}},
		{Header: h(replication.FORMAT_DESCRIPTION_EVENT, 126, 122), Event: &replication.FormatDescriptionEvent{}},
		{Header: h(replication.PREVIOUS_GTIDS_EVENT, 157, 31), Event: &replication.PreviousGTIDsEvent{}},
		{Header: h(replication.ANONYMOUS_GTID_EVENT, 236, 79), Event: anonymousGTID(t)},
		{Header: h(replication.QUERY_EVENT, 315, 79), Event: &replication.QueryEvent{Schema: []byte("edxapp"), Query: []byte("BEGIN")}},
		{Header: h(replication.XID_EVENT, 346, 31), Event: &replication.XIDEvent{XID: 12}},
		{Header: h(replication.HEARTBEAT_EVENT, 400, 39), Event: &replication.GenericEvent{}},
		{Header: h(replication.ROTATE_EVENT, 393, 47), Event: &replication.RotateEvent{Position: 4, NextLogName: []byte("binlog.000004")}},
		{Header: &replication.EventHeader{Timestamp: 1764633700, EventType: replication.FORMAT_DESCRIPTION_EVENT, ServerID: 1, LogPos: 126, EventSize: 122},
			Event: &replication.FormatDescriptionEvent{}},
	}
	for _, ev := range events {
		if err := s.step(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	close(out)
	var got []*txn
	for x := range out {
		got = append(got, x)
	}
	want := []struct {
		name, pos string
		marker    bool
	}{
		// Every position holds its file's creation time, its Format_description event's timestamp; a Rotate's
		// position waits for the next file's.
		{"file:binlog.000003:4@1764633600", "file:binlog.000003:4@1764633600", true},
		{"file:binlog.000003:126@1764633600", "file:binlog.000003:126@1764633600", true},
		{"file:binlog.000003:157@1764633600", "file:binlog.000003:157@1764633600", true},
		{"file:binlog.000003:157", "file:binlog.000003:346@1764633600", false}, // the transaction: from its start to its Xid's end
		{"file:binlog.000004:4@1764633700", "file:binlog.000004:4@1764633700", true},
		{"file:binlog.000004:126@1764633700", "file:binlog.000004:126@1764633700", true},
	}
	if len(got) != len(want) {
		for _, x := range got {
			t.Logf("%s → %s marker=%v", x.gtid, x.pos, x.marker)
		}
		t.Fatalf("%d items handed to the applier, want %d", len(got), len(want))
	}
	start, err := gtid.Parse("mysql", "file:binlog.000003:4")
	if err != nil {
		t.Fatal(err)
	}
	b := newBatch(start)
	for i, w := range want {
		if got[i].gtid != w.name || got[i].pos != w.pos || got[i].marker != w.marker {
			t.Errorf("item %d: %s → %s marker=%v; want %s → %s marker=%v", i, got[i].gtid, got[i].pos, got[i].marker, w.name, w.pos, w.marker)
		}
		if err := b.add(got[i]); err != nil {
			t.Fatal(err)
		}
	}
	if b.pos.String() != "file:binlog.000004:126@1764633700" || b.count != 1 || !b.pending() {
		t.Fatalf("batch at %s counting %d transactions, want file:binlog.000004:126@1764633700 and 1", b.pos, b.count)
	}
}

// A binlog file past 4 GiB (one transaction of gigabytes; max_binlog_size is a soft limit) wraps the
// headers' 32-bit end offsets. The stream stops there with ErrUnsupported rather than save a wrapped offset,
// which would lie inside the transaction: the position stays where it was.
func TestFileModeStopsWhereOffsetsWrap(t *testing.T) {
	r := &Replicator{m: metrics.New(prometheus.NewRegistry())}
	out := make(chan *txn, 16)
	s := &streamer{r: r, out: out, gate: newByteGate(1 << 20), fileMode: true, file: "binlog.000003"}
	ctx := context.Background()
	h := func(typ replication.EventType, end uint64, size uint32) *replication.EventHeader {
		return &replication.EventHeader{Timestamp: 1764633600, EventType: typ, ServerID: 1, LogPos: uint32(end), EventSize: size}
	}
	const end = 5_000_000_000 // the big transaction's Xid really ends here
	events := []*replication.BinlogEvent{
		{Header: h(replication.ROTATE_EVENT, 0, 43), Event: &replication.RotateEvent{Position: 346, NextLogName: []byte("binlog.000003")}},
		{Header: h(replication.FORMAT_DESCRIPTION_EVENT, 126, 122), Event: &replication.FormatDescriptionEvent{}},
		{Header: h(replication.ANONYMOUS_GTID_EVENT, 425, 79), Event: anonymousGTID(t)},
		{Header: h(replication.QUERY_EVENT, 504, 79), Event: &replication.QueryEvent{Schema: []byte("edxapp"), Query: []byte("BEGIN")}},
		// … rows events of another table, up to a few bytes short of 4 GiB …
		{Header: h(replication.QUERY_EVENT, 1<<32-100, 79), Event: &replication.QueryEvent{Schema: []byte("edxapp"), Query: []byte("SAVEPOINT a")}},
		{Header: h(replication.XID_EVENT, end, 31), Event: &replication.XIDEvent{XID: 12}},
	}
	var err error
	for _, ev := range events {
		if err = s.step(ctx, ev); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "4 GiB") || !strings.Contains(err.Error(), "binlog.000003") {
		t.Fatalf("step returned %v; want ErrUnsupported naming binlog.000003 and 4 GiB", err)
	}
	close(out)
	start, _ := gtid.Parse("mysql", "file:binlog.000003:346")
	b := newBatch(start)
	for x := range out {
		if !x.marker {
			t.Errorf("a transaction was handed on: %s → %s", x.gtid, x.pos)
		}
		if err := b.add(x); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := b.pos.FilePos(); p.File != "binlog.000003" || p.Pos != 346 {
		t.Fatalf("the position moved to %s; want binlog.000003:346, before the transaction", b.pos)
	}
}

// MariaDB 11.4 and later write the events inside a transaction with end_log_pos 0: in file mode, and only
// there, go-mysql is asked to fill their offsets in.
func TestZeroLogPosFilledInFileMode(t *testing.T) {
	for _, c := range []struct {
		zero, fileMode, want bool
	}{
		{true, true, true},
		{true, false, false},
		{false, true, false},
	} {
		r := &Replicator{cfg: Config{Source: &mysql.Config{Addr: "127.0.0.1:3306"}, ZeroLogPos: c.zero}, baseLog: slog.New(slog.DiscardHandler)}
		if got := r.syncerConfig(c.fileMode).FillZeroLogPos; got != c.want {
			t.Errorf("ZeroLogPos %v, file mode %v: FillZeroLogPos %v, want %v", c.zero, c.fileMode, got, c.want)
		}
	}
}

// A session that starts inside a file (here at offset 3086) first gets a Rotate to that offset and the file's
// Format_description event, which MariaDB sends with end offset 0 and go-mysql's FillZeroLogPos (MariaDB
// 11.4+) fills in as the start plus its size (3086+252). That event has no place past the start: the position
// stays at 3086 (with the file's creation time) until a real event moves it.
func TestSessionStartFormatDescriptionDoesNotMoveThePosition(t *testing.T) {
	r := &Replicator{m: metrics.New(prometheus.NewRegistry())}
	out := make(chan *txn, 16)
	start := gtid.FilePos{File: "mysql-bin.000001", Pos: 3086, Created: 1796685159}
	s := &streamer{r: r, out: out, gate: newByteGate(1 << 20), fileMode: true, file: start.File, start: start}
	ctx := context.Background()
	events := []*replication.BinlogEvent{
		{Header: &replication.EventHeader{EventType: replication.ROTATE_EVENT, ServerID: 101, EventSize: 44},
			Event: &replication.RotateEvent{Position: 3086, NextLogName: []byte("mysql-bin.000001")}},
		{Header: &replication.EventHeader{Timestamp: 1796685159, EventType: replication.FORMAT_DESCRIPTION_EVENT, ServerID: 101, LogPos: 3086 + 252, EventSize: 252},
			Event: &replication.FormatDescriptionEvent{}},
		{Header: &replication.EventHeader{EventType: replication.HEARTBEAT_EVENT, ServerID: 101, LogPos: 3086, EventSize: 40},
			Event: &replication.GenericEvent{}},
	}
	for _, ev := range events {
		if err := s.step(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	close(out)
	var got []string
	for x := range out {
		got = append(got, x.pos)
	}
	if len(got) != 1 || got[0] != "file:mysql-bin.000001:3086@1796685159" {
		t.Fatalf("positions handed on %q; want only file:mysql-bin.000001:3086@1796685159", got)
	}
}
