package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/table"
)

const (
	// txnQueue is how many source transactions (or fragments) may wait between the streamer and the applier,
	// and queueParts how many fragments' worth of row data they may hold together (64 MiB by default): the
	// streamer reads ahead while the applier commits, within a memory bound.
	txnQueue   = 64
	queueParts = 4
	// fragmentBytes is the default Config.FragmentBytes: a source transaction whose rows outgrow it is handed
	// to the applier in parts of about this size instead of whole (see applier.applyLarge).
	fragmentBytes = 16 << 20
)

// session is one binlog connection: it streams from the last committed position until an error or the end
// of ctx. The streamer goroutine assembles transactions; the applier (this goroutine) commits them. When the
// stream ends on an error, the transactions already received are committed before session returns; when
// ctx ends, the batch in hand is (the queued rest is streamed again next time).
func (r *Replicator) session(ctx context.Context) error {
	epoch := r.store.Epoch()
	pos, err := r.resume(ctx)
	if err != nil {
		return err
	}
	src, err := table.Load(ctx, r.src, r.cfg.SourceTable)
	if err != nil {
		return schemaErr("source", err)
	}
	dst, err := table.Load(ctx, r.dst, r.cfg.TargetTable)
	if err != nil {
		return schemaErr("target", err)
	}
	dec, err := newRowDecoder(src, r.boundary.Load())
	if err != nil {
		return err
	}
	ap, err := newApplier(r, src, dst)
	if err != nil {
		return err
	}
	ap.epoch = epoch
	if err := r.checkPosition(ctx, pos); err != nil {
		return err
	}
	if err := ap.loadLanes(ctx, pos); err != nil {
		return err
	}
	fp, fileMode := pos.FilePos()
	syncer := replication.NewBinlogSyncer(r.syncerConfig(fileMode))
	defer syncer.Close()
	var stream *replication.BinlogStreamer
	if fileMode {
		if fp.Pos > math.MaxUint32 {
			return fmt.Errorf("%w: binlog offset %d does not fit the dump protocol", ErrUnsupported, fp.Pos)
		}
		stream, err = syncer.StartSync(gomysql.Position{Name: fp.File, Pos: uint32(fp.Pos)})
	} else {
		if pos.Tagged() { // prepare refuses such a checkpoint, and the stream stops before a tagged GTID
			return fmt.Errorf("%w: %w: the position %s holds %s", ErrUnsupported, ErrTaggedGTID, pos, gtid.TaggedUnsupported)
		}
		stream, err = syncer.StartSyncGTID(pos.GoMySQL())
	}
	if err != nil {
		return fmt.Errorf("start binlog stream from %s: %w", pos, r.classify(err))
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan *txn, txnQueue)
	gate := newByteGate(queueParts * r.cfg.FragmentBytes)
	st := &streamer{r: r, dec: dec, out: ch, gate: gate, fileMode: fileMode, file: fp.File, start: fp}
	ap.gate = gate
	var streamErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		streamErr = st.run(sctx, stream)
	}()
	applyErr := ap.run(ctx, ch)
	cancel()
	for range ch { // unblock the streamer if the applier stopped first
	}
	<-done
	if applyErr != nil {
		return applyErr
	}
	return streamErr
}

// resume returns where a session starts: the checkpoint's position in the target, not this process's
// memory of it. A batch whose commit succeeded although its acknowledgement was lost (the target restarted
// in between) left the checkpoint one batch ahead of memory; streaming from memory would apply it twice.
func (r *Replicator) resume(ctx context.Context) (*gtid.Set, error) {
	mem := r.Position()
	s, err := r.store.StreamGTID(ctx)
	if err != nil {
		return nil, err
	}
	db, err := gtid.Parse(r.cfg.Flavor, s)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint position: %v", checkpoint.ErrMismatch, err)
	}
	switch {
	case db.Contains(mem) && mem.Contains(db):
		return mem, nil
	case db.Contains(mem):
		r.log.Info("the checkpoint is ahead of this process: a batch had committed before its error", "checkpoint", s, "believed", mem.String())
		r.adopt(db)
		return db, nil
	}
	return nil, fmt.Errorf("%w: the checkpoint's position %s is behind this process's %s: another process rewrote it; stop every other csmh-sync on this target and start again",
		checkpoint.ErrMismatch, s, mem)
}

func schemaErr(role string, err error) error {
	if errors.Is(err, table.ErrNotFound) {
		return fmt.Errorf("%w: %s table: %v", ErrSchema, role, err)
	}
	return err
}

// streamer turns binlog events into complete source transactions.
type streamer struct {
	r    *Replicator
	dec  *rowDecoder
	out  chan<- *txn
	gate *byteGate // row data queued for the applier

	cur    *txn        // the transaction being read; nil between transactions
	handed int         // transactions handed to the applier in this session
	began  bool        // cur opened with BEGIN / XA START: it ends at COMMIT, ROLLBACK or XID
	saves  []savepoint // cur's savepoints, oldest first

	// File mode (no GTIDs, or --position file): transactions are named by binlog offsets. file is the
	// binlog being read (from Rotate events); evStart and evEnd are the current top-level event's offsets.
	fileMode       bool
	file           string
	evStart, evEnd uint64
	lastEnd        uint64       // the end offset of the last event of file read (a 32-bit header field)
	marked         gtid.FilePos // the last position sent to the applier
	// created is file's creation time (its Format_description event's timestamp), 0 until that event arrives;
	// it goes into every position of the file. start is where the session began, checked against the first
	// file's creation time once (started); rotated is where a Rotate said the next file starts, marked once
	// that file's Format_description event has told its creation time.
	created uint32
	start   gtid.FilePos
	started bool
	rotated *gtid.FilePos
}

func (s *streamer) run(ctx context.Context, stream *replication.BinlogStreamer) error {
	for {
		ev, err := stream.GetEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// go-mysql hands a connection's error over beside its events, and may hand it first: the events the
			// server sent before it are read first (a Format_description event that says the file is another
			// one than the checkpoint's explains the error that follows it).
			for _, ev := range stream.DumpEvents() {
				if err := s.step(ctx, ev); err != nil {
					return err
				}
			}
			return fmt.Errorf("read binlog: %w", s.r.classify(err))
		}
		s.r.touch()
		s.r.setConnected(true)
		if err := s.step(ctx, ev); err != nil {
			return err
		}
	}
}

// step handles one top-level event; in file mode it also tracks where the event lies and, after an event
// outside any transaction, moves the position past it.
func (s *streamer) step(ctx context.Context, ev *replication.BinlogEvent) error {
	if r, ok := ev.Event.(*replication.RotateEvent); ok && s.cur != nil {
		if err := s.dropUnfinished(ctx, string(r.NextLogName)); err != nil {
			return err
		}
	}
	if s.fileMode {
		if err := s.locate(ctx, ev); err != nil {
			return err
		}
	} else if r, ok := ev.Event.(*replication.RotateEvent); ok {
		s.file = string(r.NextLogName) // names an incident's place (incident)
	}
	if err := s.handle(ctx, ev); err != nil {
		return err
	}
	if s.fileMode && s.cur == nil && s.evEnd > 0 && !isHeartbeat(ev) {
		return s.mark(ctx, gtid.FilePos{File: s.file, Pos: s.evEnd, Created: s.created})
	}
	return nil
}

// locate tracks, in file mode, the binlog file being read and the offsets of the current event. A Rotate
// event names the next file and where it starts (the one sent at connect names the start position); between
// transactions that is where the position moves, so an idle source still gets its checkpoint onto its
// newest file. Events the server makes up (offset 0) have no place in the file.
//
// Every file starts with a Format_description event, which the server also sends first when a session starts
// inside a file. Its timestamp is when the file was created: a position saved in a file of another creation
// time is not in this file, though the name is the same (RESET MASTER starts binlog.000001 again), and the
// session stops with ErrDiverged before it reads anything from there.
func (s *streamer) locate(ctx context.Context, ev *replication.BinlogEvent) error {
	s.evStart, s.evEnd = 0, 0
	if r, ok := ev.Event.(*replication.RotateEvent); ok {
		s.file, s.created, s.rotated, s.lastEnd = string(r.NextLogName), 0, nil, r.Position
		if s.cur == nil {
			s.rotated = &gtid.FilePos{File: s.file, Pos: r.Position}
		}
		return nil
	}
	h := ev.Header
	if _, ok := ev.Event.(*replication.FormatDescriptionEvent); ok && s.file != "" {
		s.created = h.Timestamp
		if !s.started {
			s.started = true
			if s.start.File == s.file && !s.start.SameFile(s.created) {
				return fmt.Errorf("%w: the checkpoint's position %s lies in a binlog %s the source created at %s, and the source's %s now was created at %s: its binlogs were reset (RESET MASTER) or replaced since, and the changes after the checkpoint cannot be found by file and offset; start over (docs/runbook.md, \"Recover from a purged binlog\")",
					ErrDiverged, s.start, s.file, unixUTC(s.start.Created), s.file, unixUTC(s.created))
			}
		}
		if p := s.rotated; p != nil && s.cur == nil {
			s.rotated = nil
			p.Created = s.created
			if err := s.mark(ctx, *p); err != nil {
				return err
			}
		}
		// A file's Format_description event lies at offset 4. The one a server sends first in a session that
		// starts further on has no place there: MariaDB sends it with end offset 0, which go-mysql's
		// FillZeroLogPos (MariaDB 11.4+) would fill in as the start offset plus its size, past the file's end.
		if uint64(h.LogPos) != 4+uint64(h.EventSize) {
			return nil
		}
	}
	if h.LogPos == 0 || s.file == "" {
		return nil
	}
	if prev := s.lastEnd; uint64(h.LogPos) < prev && prev-uint64(h.LogPos) > 1<<31 && !isHeartbeat(ev) {
		// The header's 32-bit end offset went round: the file is past 4 GiB (one transaction of gigabytes;
		// max_binlog_size is a soft limit), where no position can be named, saved, or streamed from.
		return fmt.Errorf("%w: the source's binlog %s grew past 4 GiB (an event ends at offset %d after one that ended at %d: the binlog's 32-bit offsets went round), and positions past that cannot be named, saved or streamed from; the checkpoint holds the last position before it: start over once the source has rotated to a new binlog (docs/runbook.md, \"Recover from a purged binlog\"), or turn GTIDs on (MySQL) and start over by GTID",
			ErrUnsupported, s.file, h.LogPos, prev)
	}
	s.lastEnd = uint64(h.LogPos)
	s.evEnd = uint64(h.LogPos)
	if uint64(h.EventSize) <= s.evEnd {
		s.evStart = s.evEnd - uint64(h.EventSize)
	}
	return nil
}

// mark moves the position, between transactions, to p: everything before it has been read and belongs to
// no transaction still open. It travels to the applier like a transaction without rows, and counts as none.
func (s *streamer) mark(ctx context.Context, p gtid.FilePos) error {
	if !s.marked.IsZero() {
		if c, err := p.Compare(s.marked); err == nil && c <= 0 {
			return nil
		}
	}
	s.marked = p
	name := p.String()
	return s.send(ctx, &txn{gtid: name, pos: name, marker: true})
}

// unixUTC renders a binlog timestamp.
func unixUTC(sec uint32) string { return time.Unix(int64(sec), 0).UTC().Format(time.RFC3339) }

func isHeartbeat(ev *replication.BinlogEvent) bool {
	t := ev.Header.EventType
	return t == replication.HEARTBEAT_EVENT || t == replication.HEARTBEAT_LOG_EVENT_V2
}

// txnName is what a transaction opened by the current event is called: its GTID, or in file mode the offset
// it starts at (which names its parts when it arrives in parts; its position is the offset it ends at).
func (s *streamer) txnName(gtidName string) string {
	if s.fileMode {
		return gtid.FilePos{File: s.file, Pos: s.evStart}.String()
	}
	return gtidName
}

func (s *streamer) handle(ctx context.Context, ev *replication.BinlogEvent) error {
	switch e := ev.Event.(type) {
	case *replication.MariadbGTIDEvent:
		if err := s.endDangling(ctx, ev); err != nil {
			return err
		}
		s.open(s.txnName(fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, e.GTID.ServerID, e.GTID.SequenceNumber)))
		// A standalone transaction (DDL, mostly) is a single Query event without BEGIN/COMMIT; every other one
		// ends at its XID, COMMIT or ROLLBACK, DDL flag or not: a transaction that created a temporary table
		// in a MIXED-format session carries the flag and goes on after that statement.
		s.began = !e.IsStandalone()
	case *replication.GTIDEvent:
		return s.mysqlGTIDEvent(ctx, ev, e)
	case *replication.GtidTaggedLogEvent:
		// MySQL 8.3+ writes a tagged GTID (uuid:tag:n) in an event type of its own. By GTID the stream stops
		// before it, as the position could not hold it (gtid.TaggedUnsupported); by file and offset it is a
		// transaction like any other.
		if !s.fileMode {
			return fmt.Errorf("%w: %w: the source wrote %s, one of the %s", ErrUnsupported, ErrTaggedGTID,
				mysqlGTID(e.SID, e.Tag, e.GNO), gtid.TaggedUnsupported)
		}
		return s.mysqlGTIDEvent(ctx, ev, &e.GTIDEvent)
	case *replication.QueryEvent:
		return s.query(ctx, ev, e)
	case *replication.RowsEvent:
		if e.Table == nil || !s.isSource(e.Table) {
			return nil
		}
		if s.cur == nil {
			return fmt.Errorf("%w: a rows event of the source table outside a GTID transaction", ErrUnsupported)
		}
		if err := s.dec.decode(s.cur, e); err != nil {
			return err
		}
		if s.cur.bytes >= s.r.cfg.FragmentBytes {
			return s.fragment(ctx, ev)
		}
		return nil
	case *replication.XIDEvent:
		return s.end(ctx, ev)
	case *replication.TransactionPayloadEvent:
		// MySQL binlog_transaction_compression: the whole transaction travels inside one event.
		for _, inner := range e.Events {
			if err := s.handle(ctx, inner); err != nil {
				return err
			}
		}
	default:
		if ev.Header.EventType == replication.INCIDENT_EVENT {
			return s.incident(ctx, ev)
		}
		if ev.Header.EventType == replication.XA_PREPARE_LOG_EVENT && s.cur != nil {
			if len(s.cur.ops) > 0 || s.cur.parts > 0 {
				return fmt.Errorf("%w: XA transaction %s changes the source table; XA transactions are not replayed: apply it by hand or start over", ErrUnsupported, s.cur.gtid)
			}
			return s.end(ctx, ev)
		}
	}
	return nil
}

// incident handles an incident event: the source lost changes from its binlog here (a statement whose
// non-transactional changes outgrew the binlog cache, a binlog write that failed), and whether any were the
// source table's cannot be told. A MySQL replica stops there (error 1590); so does the stream, after the
// transactions before it, naming the event by the binlog position it starts at. Passed only when the
// operator accepted that very event (Config.AcceptIncident), after the verification ledger's proofs are
// dropped (Config.Unproven), so cutover compares every chunk again and `verify --repair` mends what was lost.
func (s *streamer) incident(ctx context.Context, ev *replication.BinlogEvent) error {
	h := ev.Header
	kind, msg := incidentText(ev.RawData, h.EventSize)
	if s.file == "" || h.LogPos < h.EventSize { // no place in a file (a binlog past 4 GiB wraps the offset)
		return fmt.Errorf("%w (%s at an unknown binlog position%s): %s. Without its position the event cannot be accepted: start over (docs/runbook.md, \"Recover from a purged binlog\")",
			ErrIncident, kind, msgSuffix(msg), incidentLost)
	}
	name := gtid.FilePos{File: s.file, Pos: uint64(h.LogPos - h.EventSize)}.String()
	if a := s.r.cfg.AcceptIncident; a != "" && a == name {
		if err := s.forgetProofs(ctx, "the incident at "+name); err != nil {
			return err
		}
		s.r.log.Warn("streaming past an incident in the source's binlog, as configured: changes the source lost from its binlog are compared and repaired by verify, not streamed",
			"position", name, "incident", kind, "message", msg)
		return nil
	}
	return fmt.Errorf("%w (%s at %s%s): %s. To go on: `run --accept-incident %s`, then `verify --repair` before cutover (accepting drops verify's proofs, so every chunk is compared again)",
		ErrIncident, kind, name, msgSuffix(msg), incidentLost, name)
}

// forgetProofs marks every chunk of verify's ledger unproven (Config.Unproven) before the stream passes an
// event whose changes to the source table are in no row event (what), which the operator accepted. Once per
// process: a later session reads the event again while the checkpoint is still before it (no transaction
// since), and proofs a verify has made since the acceptance stay.
func (s *streamer) forgetProofs(ctx context.Context, what string) error {
	if s.r.cfg.Unproven == nil || s.r.unproven.Load() {
		return nil
	}
	if err := s.r.cfg.Unproven(ctx); err != nil {
		return fmt.Errorf("forget the verification ledger's proofs before passing %s: %w", what, err)
	}
	s.r.unproven.Store(true)
	return nil
}

// incidentLost says what an incident stop means, whether it can be accepted or not.
const incidentLost = "changes the source made there may be missing from its binlog, and from the target; the stream stopped after the transactions before it"

// incidentText reads an incident event's body (after the 19-byte header, before a 4-byte checksum if any):
// a 2-byte incident number, then a length-prefixed message.
func incidentText(raw []byte, size uint32) (kind, msg string) {
	const header = replication.EventHeaderSize
	kind = "incident"
	if len(raw) < header+2 || uint32(len(raw)) < size {
		return kind, ""
	}
	body := raw[header:size]
	switch n := uint16(body[0]) | uint16(body[1])<<8; n {
	case 1:
		kind = "LOST_EVENTS"
	default:
		kind = "incident " + strconv.Itoa(int(n))
	}
	if len(body) > 3 && int(body[2]) <= len(body)-3 {
		msg = string(body[3 : 3+int(body[2])])
	}
	return kind, msg
}

func msgSuffix(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + strconv.Quote(msg)
}

func (s *streamer) open(gtid string) {
	s.cur = &txn{gtid: gtid}
	s.began = false
	s.saves = s.saves[:0]
}

// dropUnfinished drops the transaction being read when its binlog file ends inside it. The server rotates
// only between transactions, so a file ends inside one only where the source stopped while writing it
// (MariaDB leaves the partial group at the end of the file after a crash; MySQL cuts it off at recovery):
// the source never committed it. A replica rolls such a group back ("Rolling back unfinished transaction");
// so does the stream: none of its changes reach the target, and the position does not move for it.
func (s *streamer) dropUnfinished(ctx context.Context, next string) error {
	t := s.cur
	s.cur = nil
	s.r.log.Warn("dropping a transaction its binlog file ends inside: the source stopped while writing it and never committed it",
		"transaction", t.gtid, "file", s.file, "next_file", next, "changes", len(t.ops), "parts_applied", t.parts)
	if t.parts == 0 {
		return nil
	}
	t.ops, t.counts, t.bytes, t.dropped = nil, checkpoint.Counters{}, 0, true
	return s.send(ctx, t)
}

// endDangling closes a transaction whose terminator was not recognised when the next one starts: all of its
// events have been read, so its position is safe to take.
func (s *streamer) endDangling(ctx context.Context, ev *replication.BinlogEvent) error {
	if s.cur == nil {
		return nil
	}
	if s.fileMode { // the dangling transaction ended where this event begins
		return s.endAt(ctx, ev, s.evStart)
	}
	return s.end(ctx, ev)
}

func (s *streamer) query(ctx context.Context, ev *replication.BinlogEvent, e *replication.QueryEvent) error {
	q := strings.TrimSpace(string(e.Query))
	head := strings.ToUpper(q[:min(len(q), 20)])
	switch {
	case head == "BEGIN" || strings.HasPrefix(head, "START TRANSACTION"):
		if s.cur == nil && s.fileMode { // MySQL before 5.7 without GTIDs: BEGIN is the first event
			s.open(s.txnName(""))
		}
		s.began = true
		return nil
	case strings.HasPrefix(head, "XA START"):
		s.began = true
		return nil
	case head == "COMMIT":
		return s.end(ctx, ev)
	case head == "ROLLBACK":
		return s.rollback(ctx, ev)
	case strings.HasPrefix(head, "SAVEPOINT"):
		s.savepoint(q)
		return nil
	case strings.HasPrefix(head, "ROLLBACK TO"):
		return s.rollbackTo(q)
	case strings.HasPrefix(head, "RELEASE SAVEPOINT"), strings.HasPrefix(head, "XA END"):
		return nil
	}
	schema := string(e.Schema)
	if ddlTouches(q, schema, s.r.cfg.SourceTable, s.r.cfg.FoldNames) {
		if s.cur == nil && s.fileMode { // MySQL before 5.7 without GTIDs: the statement is the transaction
			s.open(s.txnName(""))
		}
		gtid := "?"
		if s.cur != nil {
			gtid = s.cur.gtid
		}
		// A DDL the operator reviewed (Config.AcceptDDL) is passed when it is the first transaction read
		// since connecting: the table definitions were then loaded after it ran, so they describe the rows
		// that follow it, and no row before it is decoded with them.
		// What the DDL did to the source's rows is in no row event (TRUNCATE, EXCHANGE PARTITION, a lossy
		// MODIFY): verify's proofs are dropped first, so the next verify and cutover's compare every chunk.
		if a := s.r.cfg.AcceptDDL; a != "" && a == gtid && s.handed == 0 && !s.began {
			if err := s.forgetProofs(ctx, "the DDL "+gtid); err != nil {
				return err
			}
			s.r.log.Warn("applying past DDL of the source table, as configured; verify's proofs are dropped, so the next verify compares every chunk",
				"gtid", gtid, "statement", fmt.Sprintf("%.300s", q))
			return s.end(ctx, ev)
		}
		// The transactions before it are already queued: the applier commits them, then Run returns.
		return fmt.Errorf("%w (`%.300s`, transaction %s): the stream stopped after the transaction before it; re-run preflight, adapt the target, then restart",
			ErrDDL, q, gtid)
	}
	if statementWrite(q, schema, s.r.cfg.SourceTable, s.r.cfg.FoldNames) {
		return fmt.Errorf("%w: a statement-format write to the source table (`%.300s`): its rows are not in the binlog; keep binlog_format=ROW for every session, then start over",
			ErrUnsupported, q)
	}
	if s.cur == nil || s.began {
		return nil // a statement inside a transaction (another table), or one outside any GTID
	}
	return s.end(ctx, ev) // a standalone statement: DDL of another table, GRANT, …
}

// rollback ends a transaction the source rolled back. One reaches the binlog when it also changed what a
// rollback cannot undo (a temporary or non-transactional table in a statement-logged session), and it may
// carry rows events of the source table, InnoDB's, which the rollback did undo: MariaDB 10.11 logs them when a
// MIXED-format session's transaction writes rows and then creates a temporary table. Its changes are dropped;
// it still ends like a commit, so the position moves past it, it counts as a transaction, and parts already
// handed to the applier are rolled back there (txn.rolledBack).
func (s *streamer) rollback(ctx context.Context, ev *replication.BinlogEvent) error {
	if t := s.cur; t != nil {
		if len(t.ops) > 0 || t.parts > 0 {
			s.r.log.Info("dropping the source-table changes of a transaction the source rolled back", "gtid", t.gtid, "changes", len(t.ops), "parts", t.parts)
		}
		t.ops, t.counts, t.bytes, t.rolledBack = nil, checkpoint.Counters{}, 0, true
	}
	return s.end(ctx, ev)
}

// savepoint is where a transaction's changes stood when it set a savepoint.
type savepoint struct {
	name   string
	ops    int
	counts checkpoint.Counters
	bytes  int
	parts  int
}

// savepoint records a SAVEPOINT of the current transaction. A later savepoint of the same name replaces it.
func (s *streamer) savepoint(q string) {
	t := s.cur
	if t == nil {
		return
	}
	name := savepointName(q, "SAVEPOINT")
	s.saves = slices.DeleteFunc(s.saves, func(p savepoint) bool { return strings.EqualFold(p.name, name) })
	s.saves = append(s.saves, savepoint{name: name, ops: len(t.ops), counts: t.counts, bytes: t.bytes, parts: t.parts})
}

// rollbackTo undoes the changes of the current transaction since a savepoint. A ROLLBACK TO reaches the
// binlog, after the rows events it undid, when the transaction also changed what a rollback cannot undo (as
// for ROLLBACK: a temporary or non-transactional table in a statement-logged session); the source table's
// rows since the savepoint are then undone on the source, and must not reach the target. Changes already
// handed to the applier in parts cannot be taken back: the stream stops.
func (s *streamer) rollbackTo(q string) error {
	t := s.cur
	if t == nil {
		return nil
	}
	name := savepointName(q, "ROLLBACK TO")
	i := slices.IndexFunc(s.saves, func(p savepoint) bool { return strings.EqualFold(p.name, name) })
	if i < 0 {
		if len(t.ops) == 0 && t.parts == 0 {
			return nil
		}
		return fmt.Errorf("%w: transaction %s rolls back to savepoint %q, which it did not set in the binlog: apply the transaction by hand or start over",
			ErrUnsupported, t.gtid, name)
	}
	p := s.saves[i]
	if p.parts != t.parts {
		return fmt.Errorf("%w: transaction %s rolls back to savepoint %q past source-table changes already applied in parts: apply the transaction by hand or start over",
			ErrUnsupported, t.gtid, name)
	}
	if n := len(t.ops) - p.ops; n > 0 {
		s.r.log.Info("dropping the source-table changes a transaction rolled back to a savepoint", "gtid", t.gtid, "savepoint", name, "changes", n)
	}
	t.ops = t.ops[:p.ops]
	t.counts, t.bytes = p.counts, p.bytes
	s.saves = s.saves[:i+1] // the savepoint stays; later ones are gone
	return nil
}

// savepointName is the savepoint a SAVEPOINT or ROLLBACK TO [SAVEPOINT] statement names.
func savepointName(q, verb string) string {
	rest := strings.TrimSpace(q[min(len(q), len(verb)):])
	if kw := "SAVEPOINT"; len(rest) > len(kw) && strings.EqualFold(rest[:len(kw)], kw) && (rest[len(kw)] == ' ' || rest[len(kw)] == '`') {
		rest = strings.TrimSpace(rest[len(kw):]) // ROLLBACK TO SAVEPOINT x as typed; the servers log ROLLBACK TO `x`
	}
	if len(rest) >= 2 && rest[0] == '`' && rest[len(rest)-1] == '`' {
		return strings.ReplaceAll(rest[1:len(rest)-1], "``", "`")
	}
	return rest
}

// end hands the current transaction to the applier. Its commit time is MySQL's microsecond commit timestamp
// where the GTID event carries one, else the header timestamp of the event that ends it (whole seconds).
func (s *streamer) end(ctx context.Context, ev *replication.BinlogEvent) error {
	return s.endAt(ctx, ev, s.evEnd)
}

// endAt is end with the transaction ending at offset pos of the current file (file mode).
func (s *streamer) endAt(ctx context.Context, ev *replication.BinlogEvent, pos uint64) error {
	t := s.cur
	if t == nil {
		return nil
	}
	s.cur = nil
	if s.fileMode {
		p := gtid.FilePos{File: s.file, Pos: pos, Created: s.created}
		t.pos, s.marked = p.String(), p
	}
	now := time.Now()
	t.commitTS = commitTime(ev.Header.Timestamp, t.exactTS, now)
	t.seq = s.r.seq.Add(1)
	s.handed++
	s.r.received(t, lagFrom(ev.Header.Timestamp, t.exactTS, now))
	return s.send(ctx, t)
}

// commitTime is the source's commit time of a transaction: exact (MySQL 8's immediate commit timestamp) when
// known, else the binlog header's whole second, else now.
func commitTime(header uint32, exact, now time.Time) time.Time {
	switch {
	case !exact.IsZero():
		return exact
	case header > 0:
		return time.Unix(int64(header), 0)
	}
	return now
}

// lagFrom is the moment the lag of a transaction received at now counts from: its commit time, as closely as
// the binlog tells it. A header timestamp is truncated to the second, so the commit happened within
// [header, header+1s); it also happened before the transaction was received. The latest moment both allow is
// taken: counting from the truncated second would add up to a second of lag to every transaction (the lag of
// a stream applying within milliseconds would read anything from 0 to 1 s), while this estimate is exact to
// the delivery delay when the stream keeps up and low by under a second when it reads an old binlog.
func lagFrom(header uint32, exact, now time.Time) time.Time {
	if !exact.IsZero() || header == 0 {
		return commitTime(header, exact, now)
	}
	if ceil := time.Unix(int64(header), 0).Add(time.Second); ceil.Before(now) {
		return ceil
	}
	return now
}

// fragment hands the rows read so far of a transaction that has outgrown Config.FragmentBytes, so no
// transaction, however large, is held whole: the applier writes the parts into one target transaction that
// it commits, with the position, when the last part arrives.
func (s *streamer) fragment(ctx context.Context, ev *replication.BinlogEvent) error {
	c := s.cur
	if c.parts == 0 {
		// The lag counts from the first part: the transaction is not applied until its last part is.
		s.r.receiving(s.r.seq.Add(1), lagFrom(ev.Header.Timestamp, c.exactTS, time.Now()))
	}
	f := &txn{gtid: c.gtid, ops: c.ops, counts: c.counts, bytes: c.bytes, partial: true}
	c.ops, c.counts, c.bytes = nil, checkpoint.Counters{}, 0
	c.parts++
	return s.send(ctx, f)
}

func (s *streamer) send(ctx context.Context, t *txn) error {
	if err := s.gate.acquire(ctx, t.bytes); err != nil {
		return err
	}
	select {
	case s.out <- t:
		return nil
	case <-ctx.Done():
		s.gate.release(t.bytes)
		return ctx.Err()
	}
}

// byteGate bounds the bytes in flight between the streamer and the applier. One item larger than the whole
// budget still passes when nothing else is in flight.
type byteGate struct {
	mu    sync.Mutex
	used  int
	limit int
	freed chan struct{} // closed and replaced on every release
}

func newByteGate(limit int) *byteGate { return &byteGate{limit: limit, freed: make(chan struct{})} }

func (g *byteGate) acquire(ctx context.Context, n int) error {
	for {
		g.mu.Lock()
		if g.used == 0 || g.used+n <= g.limit {
			g.used += n
			g.mu.Unlock()
			return nil
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (g *byteGate) release(n int) {
	g.mu.Lock()
	g.used -= n
	close(g.freed)
	g.freed = make(chan struct{})
	g.mu.Unlock()
}

func (s *streamer) isSource(t *replication.TableMapEvent) bool {
	return sameTable(table.Name{Schema: string(t.Schema), Table: string(t.Table)}, s.r.cfg.SourceTable, s.r.cfg.FoldNames)
}

// mysqlGTIDEvent opens the transaction a MySQL GTID event (tagged or not) begins.
func (s *streamer) mysqlGTIDEvent(ctx context.Context, ev *replication.BinlogEvent, e *replication.GTIDEvent) error {
	if err := s.endDangling(ctx, ev); err != nil {
		return err
	}
	// Without GTIDs, MySQL 5.7+ still opens every transaction with an Anonymous_GTID event, which go-mysql
	// decodes as a GTIDEvent with a zero uuid: in file mode it is named by its offset instead.
	s.open(s.txnName(mysqlGTID(e.SID, e.Tag, e.GNO)))
	if e.ImmediateCommitTimestamp > 0 { // MySQL 8.0.1+: the commit time on this server, in microseconds
		s.cur.exactTS = e.ImmediateCommitTime()
	}
	return nil
}

// mysqlGTID names a MySQL transaction as gtid_executed does: uuid:n, or uuid:tag:n with the tag in lower case
// (tags are not case-sensitive, and the server prints them so).
func mysqlGTID(sid []byte, tag string, gno int64) string {
	u := fmt.Sprintf("%x", sid)
	if len(sid) == 16 {
		u = fmt.Sprintf("%x-%x-%x-%x-%x", sid[0:4], sid[4:6], sid[6:8], sid[8:10], sid[10:16])
	}
	if tag != "" {
		return u + ":" + strings.ToLower(tag) + ":" + strconv.FormatInt(gno, 10)
	}
	return u + ":" + strconv.FormatInt(gno, 10)
}

// syncerConfig pins how binlog values are decoded: temporal values as UTC strings, doubles as float64 (the
// exact stored bits; the applier prints the shortest text that reads back as the same double), decimals as
// strings. Rows events of other tables are never decoded.
//
// In file mode on a source that writes events inside a transaction without their end offset (ZeroLogPos),
// go-mysql fills it in.
func (r *Replicator) syncerConfig(fileMode bool) replication.BinlogSyncerConfig {
	src := r.cfg.Source
	host, portStr, err := net.SplitHostPort(src.Addr)
	if err != nil {
		host, portStr = src.Addr, "3306"
	}
	port, _ := strconv.ParseUint(portStr, 10, 16)
	source, fold := r.cfg.SourceTable, r.cfg.FoldNames
	return replication.BinlogSyncerConfig{
		ServerID: r.cfg.ServerID, Flavor: r.cfg.Flavor,
		// The SQL pool's own TLS settings: dbconn.Open has settled preferred into TLS or plaintext for both.
		Host: host, Port: uint16(port), User: src.User, Password: src.Passwd, TLSConfig: src.TLS,
		// Dial what the source DSN names, unix sockets included, bounded by its dial timeout; without TLS, a
		// server's request for the password in clear text is refused (go-mysql would send it).
		Dialer:                   dbconn.BinlogDialer(src),
		Logger:                   slog.New(minLevel{r.baseLog.With("component", "binlog-syncer").Handler(), slog.LevelWarn}),
		HeartbeatPeriod:          r.cfg.Heartbeat,
		ReadTimeout:              3*r.cfg.Heartbeat + 5*time.Second,
		ParseTime:                false,
		TimestampStringLocation:  time.UTC,
		UseDecimal:               false,
		UseFloatWithTrailingZero: false,
		DisableRetrySync:         true, // reconnecting is Run's job: from the committed position, with backoff
		FillZeroLogPos:           fileMode && r.cfg.ZeroLogPos,
		EventCacheCount:          128, // bounds memory: events of up to max_allowed_packet each wait here
		RowsEventDecodeFunc: func(e *replication.RowsEvent, data []byte) error {
			pos, err := e.DecodeHeader(data)
			if err != nil {
				return err
			}
			if e.Table == nil || !sameTable(table.Name{Schema: string(e.Table.Schema), Table: string(e.Table.Table)}, source, fold) {
				return nil
			}
			return e.DecodeData(pos, data)
		},
	}
}

// minLevel drops go-mysql's chatty Info logs (it logs its whole config on every connect).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
