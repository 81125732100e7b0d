package replication

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
)

func TestRetryable(t *testing.T) {
	r := &Replicator{cfg: Config{TargetTable: table.Name{Schema: "edxapp_csmh", Table: "t"}}}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"lost connection", fmt.Errorf("read binlog: %w", io.EOF), true},
		{"bad conn", driver.ErrBadConn, true},
		{"deadlock", fmt.Errorf("apply: %w", &mysql.MySQLError{Number: 1213}), true},
		{"lock wait", &mysql.MySQLError{Number: 1205}, true},
		{"server shutdown on the dump connection", &gomysql.MyError{Code: 1053, Message: "shutdown"}, true},
		{"duplicate key on another unique key", &mysql.MySQLError{Number: 1062}, false},
		{"data too long", fmt.Errorf("apply: %w", &mysql.MySQLError{Number: 1406}), false},
		{"no replication privilege", &gomysql.MyError{Code: 1227}, false},
		{"cleartext password refused (dbconn.ClearPasswordRefused)", &gomysql.MyError{Code: 2059}, false},
		{"ddl", fmt.Errorf("%w (`ALTER`)", ErrDDL), false},
		{"id collision", ErrIDCollision, false},
		{"purged, classified", r.classify(&gomysql.MyError{Code: 1236, Message: "Could not find GTID state requested by slave in any binlog files"}), false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	err := r.classify(fmt.Errorf("wrapped: %w", &gomysql.MyError{Code: 1236, Message: "binlogs purged"}))
	if !errors.Is(err, ErrPurged) || !strings.Contains(err.Error(), "start over") || !strings.Contains(err.Error(), "`edxapp_csmh`.csmh_sync_state") {
		t.Fatalf("classify(1236) = %v", err)
	}
	if err := r.classify(context.Canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("classify changed an unrelated error: %v", err)
	}
}

// Error 1236 is sorted by the server's words: a purged binlog (start over), a position the source never
// wrote (the wrong server), or anything else (the server's message, and the checkpoint kept). The messages
// are MySQL 5.7's, 8.0/8.4's and MariaDB 10.11's (its errmsg.sys), with the dump thread's suffix where it
// adds one.
func TestBinlogRefusalMessages(t *testing.T) {
	r := &Replicator{cfg: Config{TargetTable: table.Name{Schema: "edxapp_csmh", Table: "t"}}}
	for _, c := range []struct {
		msg  string
		want error
	}{
		// MySQL 5.7 and 8.0 before 8.0.26, then 8.0.26+ and 8.4.
		{"The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but the master has purged binary logs containing GTIDs that the slave requires.", ErrPurged},
		{"Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere, or provision a new replica from backup. Consider increasing the source's binary log expiration period. The GTID set sent by the replica is '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5', and the missing transactions are '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2'", ErrPurged},
		{"Could not find first log file name in binary log index file", ErrPurged},
		{"Slave has more GTIDs than the master has, using the master's SERVER_UUID. This may indicate that the end of the binary log was truncated or that the last binary log file was lost, e.g., after a power or disk failure when sync_binlog != 1.", ErrDiverged},
		{"Replica has more GTIDs than the source has, using the source's SERVER_UUID. This may indicate that the the last binary log file was truncated or lost, e.g., after a power failure when sync_binlog != 1.", ErrDiverged},
		{"Client requested master to start replication from position > file size", ErrDiverged},
		{"Client requested source to start replication from position > file size; the first event 'binlog.000003' at 99999, the last event read from 'binlog.000003' at 4, the last byte read from 'binlog.000003' at 4.", ErrDiverged},
		{"log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master; the first event 'binlog.000003' at 4, the last event read from 'binlog.000003' at 1234, the last byte read from 'binlog.000003' at 1253.", ErrBinlogRead},
		{"A slave with the same server_uuid/server_id as this slave has connected to the master; the first event 'binlog.000002' at 119263798, the last event read from './binlog.000002' at 126, the last byte read from './binlog.000002' at 119263798.", ErrServerIDInUse},
		{"A replica with the same server_uuid/server_id as this replica has connected to the source; the first event 'binlog.000017' at 4, the last event read from './binlog.000017' at 96475, the last byte read from './binlog.000017' at 96475.", ErrServerIDInUse},
		{"binlog truncated in the middle of event; consider out of disk space on master; the first event 'binlog.000003' at 4, the last event read from 'binlog.000003' at 1234, the last byte read from 'binlog.000003' at 1253.", ErrBinlogRead},
		// MariaDB 10.11.
		{"Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.", ErrPurged},
		{"Connecting slave requested to start from GTID 0-1-12, which is not in the master's binlog", ErrDiverged},
		{"Connecting slave requested to start from GTID 0-1-12, which is not in the master's binlog. Since the master's binlog contains GTIDs with higher sequence numbers, it probably means that the slave has diverged due to executing extra erroneous transactions", ErrDiverged},
		{"The binlog on the master is missing the GTID 0-1-12 requested by the slave (even though a subsequent sequence number does exist), and GTID strict mode is enabled", ErrDiverged},
		{"bogus data in log event; the first event 'mysql-bin.000001' at 843, the last event read from 'mysql-bin.000001' at 979, the last byte read from 'mysql-bin.000001' at 998.", ErrBinlogRead},
		{"event read from binlog did not pass crc check; the first event 'mysql-bin.000001' at 843, the last event read from 'mysql-bin.000001' at 979, the last byte read from 'mysql-bin.000001' at 1022.", ErrBinlogRead},
	} {
		err := r.classify(fmt.Errorf("start binlog stream: %w", &gomysql.MyError{Code: 1236, Message: c.msg}))
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("classify(1236 %q) = %v; want %v with the server's message", c.msg, err, c.want)
		}
		if retryable(err) {
			t.Errorf("classify(1236 %q) is retried; it is a definitive stop", c.msg)
		}
		if startsOver := strings.Contains(err.Error(), "purged binlogs the checkpoint needs"); startsOver != (c.want == ErrPurged) {
			t.Errorf("classify(1236 %q) = %v: only a purged binlog calls for starting over", c.msg, err)
		}
	}
	// MariaDB 10.11 drops the older of two connections with one server id with error 4052 (ER_SLAVE_SAME_ID).
	msg := "A slave with the same server_uuid/server_id is already connected; the first event '.' at 0, the last event read from 'mysql-bin.000001' at 1699, the last byte read from 'mysql-bin.000001' at 1730."
	err := r.classify(fmt.Errorf("read binlog: %w", &gomysql.MyError{Code: 4052, Message: msg}))
	if !errors.Is(err, ErrServerIDInUse) || !strings.Contains(err.Error(), msg) || retryable(err) {
		t.Errorf("classify(4052 %q) = %v; want ErrServerIDInUse, not retried, with the server's message", msg, err)
	}
}

func testTable() *table.Table {
	return &table.Table{Name: table.Name{Schema: "edxapp", Table: "h"}, Columns: []table.Column{
		{Name: "id", DataType: "int"}, {Name: "state", DataType: "longtext", Charset: "utf8mb4"},
		{Name: "grade", DataType: "double"}, {Name: "n", DataType: "int", Unsigned: true},
	}}
}

// Column positions map by the names the table-map event carries (binlog_row_metadata=FULL), else by position.
func TestRowDecoderMapsByName(t *testing.T) {
	d, err := newRowDecoder(testTable(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	named := &replication.TableMapEvent{ColumnCount: 4, ColumnName: [][]byte{[]byte("n"), []byte("grade"), []byte("ID"), []byte("state")}}
	perm, err := d.mapping(named)
	if err != nil || fmt.Sprint(perm) != "[3 2 0 1]" {
		t.Fatalf("perm %v (%v)", perm, err)
	}
	plain := &replication.TableMapEvent{ColumnCount: 4}
	if perm, err := d.mapping(plain); err != nil || fmt.Sprint(perm) != "[0 1 2 3]" {
		t.Fatalf("perm %v (%v)", perm, err)
	}
	if _, err := d.mapping(&replication.TableMapEvent{ColumnCount: 5}); !errors.Is(err, ErrSchema) {
		t.Fatalf("a column more: %v", err)
	}
	if _, err := d.mapping(&replication.TableMapEvent{ColumnCount: 4, ColumnName: [][]byte{[]byte("id"), []byte("x"), []byte("grade"), []byte("n")}}); !errors.Is(err, ErrSchema) {
		t.Fatalf("unknown column: %v", err)
	}
	if v := unsign(table.Column{DataType: "int", Unsigned: true}, int32(-1)); v != uint64(4294967295) {
		t.Fatalf("unsign int32(-1) = %v", v)
	}
	if v := unsign(table.Column{DataType: "mediumint", Unsigned: true}, int32(-1)); v != uint64(16777215) {
		t.Fatalf("unsign mediumint -1 = %v", v)
	}
}

// The applier merges runs of the same kind, keeps their order, and in delete+insert mode never puts one id
// twice into one INSERT.
func TestStatementWriter(t *testing.T) {
	src := testTable()
	r := &Replicator{cfg: Config{TargetTable: table.Name{Schema: "t", Table: "x"}}}
	for _, c := range []struct {
		name         string
		deleteInsert bool
		ops          []op
		want         []string
	}{
		{"runs", false, []op{
			{kind: opUpsert, id: 1, row: []any{int32(1), "a", 0.1, nil}},
			{kind: opUpsert, id: 2, row: []any{int32(2), []byte("b'c"), 1e-7, uint64(5)}},
			{kind: opDelete, id: 3}, {kind: opDelete, id: 4},
			{kind: opUpsert, id: 1, row: []any{int32(1), nil, 0.333333333333, nil}},
		}, []string{
			"INSERT INTO `t`.`x` (`id`,`state`,`grade`,`n`) VALUES (1,'a',0.1,NULL),(2,'b\\'c',1e-07,5) ON DUPLICATE KEY UPDATE `state`=VALUES(`state`),`grade`=VALUES(`grade`),`n`=VALUES(`n`)",
			"DELETE FROM `t`.`x` WHERE `id` IN (3,4)",
			"INSERT INTO `t`.`x` (`id`,`state`,`grade`,`n`) VALUES (1,NULL,0.333333333333,NULL) ON DUPLICATE KEY UPDATE `state`=VALUES(`state`),`grade`=VALUES(`grade`),`n`=VALUES(`n`)",
		}},
		{"delete+insert", true, []op{
			{kind: opUpsert, id: 1, row: []any{int32(1), "a", nil, nil}},
			{kind: opUpsert, id: 2, row: []any{int32(2), "b", nil, nil}},
			{kind: opUpsert, id: 1, row: []any{int32(1), "c", nil, nil}},
		}, []string{
			"DELETE FROM `t`.`x` WHERE `id` IN (1,2)",
			"INSERT INTO `t`.`x` (`id`,`state`,`grade`,`n`) VALUES (1,'a',NULL,NULL),(2,'b',NULL,NULL)",
			"DELETE FROM `t`.`x` WHERE `id` IN (1)",
			"INSERT INTO `t`.`x` (`id`,`state`,`grade`,`n`) VALUES (1,'c',NULL,NULL)",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := testTable()
			if c.deleteInsert {
				dst.UniqueKeys = map[string][]string{"u": {"n"}}
			}
			a, err := newApplier(r, src, dst)
			if err != nil {
				t.Fatal(err)
			}
			a.binary = false // the text form: used for non-UTF-8 columns; its exact SQL is checked here
			var got []string
			w := &stmtWriter{a: a, exec: func(q string) error { got = append(got, q); return nil }}
			for _, o := range c.ops {
				if err := w.add(o); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.finish(); err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Fatalf("statements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
	// A run larger than the statement budget is split; a latin1 column gets an introducer.
	dst := testTable()
	src2 := testTable()
	src2.Columns[1].Charset = "latin1"
	a, _ := newApplier(r, src2, dst)
	var got []string
	w := &stmtWriter{a: a, exec: func(q string) error { got = append(got, q); return nil }}
	big := strings.Repeat("x", stmtBudget/3)
	for i := 1; i <= 4; i++ {
		if err := w.add(op{kind: opUpsert, id: uint64(i), row: []any{int32(i), big, nil, nil}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !strings.Contains(got[0], ",_latin1'xxx") {
		t.Fatalf("%d statements; want 2 with the introducer", len(got))
	}
}

// UTF-8 tables send upserts as prepared statements: one "(?,…)" group per row, values passed unchanged.
func TestStatementWriterBinary(t *testing.T) {
	r := &Replicator{cfg: Config{TargetTable: table.Name{Schema: "t", Table: "x"}}}
	a, err := newApplier(r, testTable(), testTable())
	if err != nil {
		t.Fatal(err)
	}
	if !a.binary {
		t.Fatal("UTF-8 table not in binary mode")
	}
	type call struct {
		q    string
		args []any
	}
	var got []call
	var text []string
	w := &stmtWriter{a: a, exec: func(q string) error { text = append(text, q); return nil },
		execArgs: func(q string, args []any) error { got = append(got, call{q, append([]any(nil), args...)}); return nil }}
	for _, o := range []op{
		{kind: opUpsert, id: 1, row: []any{int32(1), "a", 0.1, nil}},
		{kind: opUpsert, id: 2, row: []any{int32(2), []byte("b'c"), 1e-7, uint64(5)}},
		{kind: opDelete, id: 3},
	} {
		if err := w.add(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	want := "INSERT INTO `t`.`x` (`id`,`state`,`grade`,`n`) VALUES (?,?,?,?),(?,?,?,?) ON DUPLICATE KEY UPDATE `state`=VALUES(`state`),`grade`=VALUES(`grade`),`n`=VALUES(`n`)"
	if len(got) != 1 || got[0].q != want || len(got[0].args) != 8 || got[0].args[2] != 0.1 || got[0].args[3] != nil {
		t.Fatalf("prepared upsert: %+v", got)
	}
	if len(text) != 1 || text[0] != "DELETE FROM `t`.`x` WHERE `id` IN (3)" {
		t.Fatalf("delete: %v", text)
	}
	// A run is cut at binaryRows rows.
	got = nil
	for i := 0; i < binaryRows+1; i++ {
		if err := w.add(op{kind: opUpsert, id: uint64(10 + i), row: []any{int32(10 + i), "s", nil, nil}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].args) != 4*binaryRows || len(got[1].args) != 4 {
		t.Fatalf("split: %d statements", len(got))
	}
}

// The lag of a transaction counts from its commit as closely as the binlog tells it. MariaDB (and MySQL 5.7)
// headers hold whole seconds: counting from the truncated second would read a stream that applies within
// milliseconds as lagging anything up to a second.
func TestLagFrom(t *testing.T) {
	const header = 1764633600 // 2025-12-02 00:00:00 UTC
	sec := time.Unix(header, 0)
	for _, c := range []struct {
		name  string
		exact time.Time
		now   time.Time
		want  time.Time
	}{
		{"received in the commit's second: lag counts from receipt", time.Time{}, sec.Add(300 * time.Millisecond), sec.Add(300 * time.Millisecond)},
		{"read from an old binlog: lag counts from the end of the commit's second", time.Time{}, sec.Add(5300 * time.Millisecond), sec.Add(time.Second)},
		{"MySQL 8 microsecond commit timestamp", sec.Add(123456 * time.Microsecond), sec.Add(5 * time.Second), sec.Add(123456 * time.Microsecond)},
	} {
		if got := lagFrom(header, c.exact, c.now); !got.Equal(c.want) {
			t.Errorf("%s: lag from %s, want %s", c.name, got.Format(time.StampMicro), c.want.Format(time.StampMicro))
		}
	}
	if got, now := lagFrom(0, time.Time{}, sec), sec; !got.Equal(now) {
		t.Errorf("no timestamp at all: lag from %s, want now", got)
	}
}

// A MySQL 8.0 GTID event (binary layout of Gtid_log_event: flags, SID, GNO, logical clock, the 7-byte
// immediate commit timestamp in microseconds, transaction length, server version) gives the transaction its
// exact commit time, and the lag counts from it.
func TestMySQL8CommitTimestamp(t *testing.T) {
	const commitMicros = 1764633600123456
	sid := []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}
	data := []byte{0x01}
	data = append(data, sid...)
	data = binary.LittleEndian.AppendUint64(data, 23) // GNO
	data = append(data, replication.LogicalTimestampTypeCode)
	data = binary.LittleEndian.AppendUint64(data, 22) // last_committed
	data = binary.LittleEndian.AppendUint64(data, 23) // sequence_number
	ts := binary.LittleEndian.AppendUint64(nil, commitMicros)
	data = append(data, ts[:7]...) // immediate_commit_timestamp; high bit clear: original = immediate
	data = append(data, 200)       // transaction_length
	data = binary.LittleEndian.AppendUint32(data, 80036)
	ev := &replication.GTIDEvent{}
	if err := ev.Decode(data); err != nil {
		t.Fatal(err)
	}
	r := &Replicator{m: metrics.New(prometheus.NewRegistry())}
	out := make(chan *txn, 1)
	s := &streamer{r: r, out: out, gate: newByteGate(1 << 20)}
	ctx := context.Background()
	if err := s.handle(ctx, &replication.BinlogEvent{Header: &replication.EventHeader{Timestamp: 1764633600}, Event: ev}); err != nil {
		t.Fatal(err)
	}
	if err := s.handle(ctx, &replication.BinlogEvent{Header: &replication.EventHeader{Timestamp: 1764633600}, Event: &replication.XIDEvent{}}); err != nil {
		t.Fatal(err)
	}
	got := <-out
	want := time.UnixMicro(commitMicros)
	if got.gtid != "3e11fa47-71ca-11e1-9e33-c80aa9429562:23" || !got.commitTS.Equal(want) {
		t.Fatalf("transaction %s committed at %s, want 3e11fa47-71ca-11e1-9e33-c80aa9429562:23 at %s", got.gtid, got.commitTS.Format(time.StampMicro), want.Format(time.StampMicro))
	}
	if lag, max := r.Lag(), time.Since(want); lag > max || lag < max-time.Second {
		t.Fatalf("lag %s, want the time since the exact commit, %s", lag, max)
	}
}

// A batch that was applied lets go of its transactions: their decoded rows (up to the batch's byte budget) are
// not kept alive by the slots a later, smaller batch does not overwrite.
func TestBatchResetReleasesTransactions(t *testing.T) {
	b := &batch{}
	for range 3 {
		b.txs = append(b.txs, &txn{gtid: "0-1-1"})
	}
	b.reset()
	if len(b.txs) != 0 {
		t.Fatalf("%d transactions after reset", len(b.txs))
	}
	for i, tx := range b.txs[:cap(b.txs)] {
		if tx != nil {
			t.Fatalf("slot %d still holds a transaction after reset", i)
		}
	}
}
