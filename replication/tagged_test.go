package replication

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/csmh-sync/csmh-sync/metrics"
)

// sid is 3e11fa47-71ca-11e1-9e33-c80aa9429562, the MySQL manual's example uuid.
var sid = []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}

// A tagged GTID event (MySQL 8.3+'s Gtid_tagged_log_event, go-mysql's GtidTaggedLogEvent, a type of its own
// that a case for GTIDEvent does not match) is named as gtid_executed names it, tag in lower case, and where
// the stream follows GTIDs it stops there with the fix; by file and offset its transaction streams like any
// other.
func TestTaggedGTIDEvent(t *testing.T) {
	if got := mysqlGTID(sid, "MyTag", 5); got != "3e11fa47-71ca-11e1-9e33-c80aa9429562:mytag:5" {
		t.Fatalf("mysqlGTID = %q", got)
	}
	tagged := &replication.GtidTaggedLogEvent{GTIDEvent: replication.GTIDEvent{SID: sid, Tag: "mytag", GNO: 5}}
	h := func(typ replication.EventType, end, size uint32) *replication.EventHeader {
		return &replication.EventHeader{Timestamp: 1764633600, EventType: typ, ServerID: 1, LogPos: end, EventSize: size}
	}
	events := []*replication.BinlogEvent{
		{Header: h(replication.GTID_TAGGED_LOG_EVENT, 236, 79), Event: tagged},
		{Header: h(replication.QUERY_EVENT, 315, 79), Event: &replication.QueryEvent{Schema: []byte("edxapp"), Query: []byte("BEGIN")}},
		{Header: h(replication.XID_EVENT, 346, 31), Event: &replication.XIDEvent{XID: 12}},
	}
	ctx := context.Background()

	r := &Replicator{m: metrics.New(prometheus.NewRegistry())}
	s := &streamer{r: r, out: make(chan *txn, 16), gate: newByteGate(1 << 20)}
	err := s.step(ctx, events[0])
	if !errors.Is(err, ErrUnsupported) || !errors.Is(err, ErrTaggedGTID) ||
		!strings.Contains(err.Error(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:mytag:5") || !strings.Contains(err.Error(), "--position file") {
		t.Fatalf("GTID mode: %v, want the tagged-GTID stop naming the GTID and --position file", err)
	}

	out := make(chan *txn, 16)
	s = &streamer{r: r, out: out, gate: newByteGate(1 << 20), fileMode: true, file: "binlog.000003", evStart: 157}
	for _, ev := range events {
		if err := s.step(ctx, ev); err != nil {
			t.Fatalf("file mode: %v", err)
		}
	}
	close(out)
	var names []string
	for x := range out {
		if !x.marker {
			names = append(names, x.gtid+" → "+x.pos)
		}
	}
	if len(names) != 1 || names[0] != "file:binlog.000003:157 → file:binlog.000003:346" {
		t.Fatalf("file mode: transactions %q, want the tagged one from its start to its Xid's end", names)
	}
}
