// Package checkpoint keeps csmh-sync's progress in the target database, next to the rows it describes.
//
// Two small tables live in the target table's schema:
//
//	csmh_sync_state     one row (id = 1): format version, table identity, the stream's GTID position,
//	                    the id boundary copied rows must stay below, apply counters.
//	csmh_sync_backfill  one row per backfill segment: its inclusive id range, the next id to copy and
//	                    the rows copied so far.
//	csmh_sync_lanes     one row per extra apply lane (1…n-1): the position up to which that lane applied
//	                    its share of the row changes. Only a lane row AHEAD of csmh_sync_state means
//	                    anything: its share of the transactions between the two is applied already.
//	csmh_sync_stages    one row per stage (backfill, stream) that stopped and was not started again since:
//	                    why, and when. Progress never depends on it; status and operators read it.
//	csmh_sync_probe     rows the backfill's latency guard writes, as the app writes CSMHE rows, to time the
//	                    target's commits (Probe). Nothing reads them. Not in Tables: the guard is optional,
//	                    and a checkpoint from before it resumes without its grant (EnsureProbe).
//
// Writers update these rows inside the same transaction as the rows they copy or apply (Vitess's vplayer
// does the same), so a crash can never leave progress that disagrees with the data. The replication
// applier writes only csmh_sync_state and each backfill worker only its own segment row, so the two
// never wait on each other's row locks.
package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

// FormatVersion is the layout of the checkpoint tables this build reads and writes.
const FormatVersion = 1

// Table names, in the target table's schema.
const (
	StateTable    = "csmh_sync_state"
	BackfillTable = "csmh_sync_backfill"
	LanesTable    = "csmh_sync_lanes"
	StagesTable   = "csmh_sync_stages"
	ProbeTable    = "csmh_sync_probe"
)

// Tables lists the checkpoint tables, for the grants they need (Ensure creates each).
var Tables = []string{StateTable, BackfillTable, LanesTable, StagesTable}

// ErrNone means no checkpoint exists yet: a first start.
var ErrNone = errors.New("no checkpoint yet")

// ErrMismatch means the checkpoint belongs to another migration (other tables or flavor).
var ErrMismatch = errors.New("checkpoint belongs to another migration")

// Execer is what the store needs from a *sql.DB, *sql.Conn or *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// State is the whole checkpoint.
type State struct {
	FormatVersion int
	SourceTable   string
	TargetTable   string
	Flavor        string // mysql or mariadb
	SourceServer  string // server_uuid (MySQL) or server_id (MariaDB) of the source at first start
	GTID          string // every source transaction in this set is applied
	IDBoundary    uint64 // copied ids must stay below: CSMHE's first app-written id at first start
	Applied       Counters
	LastEventAt   time.Time // source commit time of the last applied transaction
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Segments      []Segment
	Stops         []StageStop // stages that stopped and were not started again since
}

// Counters count what the stream applied.
type Counters struct {
	Transactions, Inserts, Updates, Deletes uint64
}

// Segment is one backfill worker's id range.
type Segment struct {
	ID        int
	Start     uint64 // inclusive
	End       uint64 // inclusive
	Next      uint64 // every id below Next (within the segment) is copied
	Rows      uint64
	Done      bool
	UpdatedAt time.Time
}

// Remaining is the number of ids of the segment not yet copied.
func (s Segment) Remaining() uint64 {
	if s.Done || s.Next > s.End {
		return 0
	}
	return s.End - s.Next + 1
}

// Store reads and writes the checkpoint tables.
type Store struct {
	db     *sql.DB
	schema string
	state  string
	fill   string
	lanes  string
	stages string
	probe  string
	probes atomic.Uint64
	fence  fenceBox
}

// New returns a store for the checkpoint tables in schema (the target table's schema).
func New(db *sql.DB, schema string) *Store {
	return &Store{db: db, schema: schema,
		state:  table.QuoteIdent(schema) + "." + table.QuoteIdent(StateTable),
		fill:   table.QuoteIdent(schema) + "." + table.QuoteIdent(BackfillTable),
		lanes:  table.QuoteIdent(schema) + "." + table.QuoteIdent(LanesTable),
		stages: table.QuoteIdent(schema) + "." + table.QuoteIdent(StagesTable),
		probe:  table.QuoteIdent(schema) + "." + table.QuoteIdent(ProbeTable)}
}

// Ensure creates the checkpoint tables if needed.
func (s *Store) Ensure(ctx context.Context) error {
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS ` + s.state + ` (
  id tinyint unsigned NOT NULL,
  format_version int NOT NULL,
  source_table varchar(192) NOT NULL,
  target_table varchar(192) NOT NULL,
  flavor varchar(16) NOT NULL,
  source_server varchar(64) NOT NULL,
  gtid_set text NOT NULL,
  id_boundary bigint unsigned NOT NULL,
  applied_transactions bigint unsigned NOT NULL DEFAULT 0,
  applied_inserts bigint unsigned NOT NULL DEFAULT 0,
  applied_updates bigint unsigned NOT NULL DEFAULT 0,
  applied_deletes bigint unsigned NOT NULL DEFAULT 0,
  last_event_at datetime(6) NULL,
  created_at datetime(6) NOT NULL,
  updated_at datetime(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync checkpoint: stream position'`,
		`CREATE TABLE IF NOT EXISTS ` + s.fill + ` (
  segment int unsigned NOT NULL,
  start_id bigint unsigned NOT NULL,
  end_id bigint unsigned NOT NULL,
  next_id bigint unsigned NOT NULL,
  rows_copied bigint unsigned NOT NULL DEFAULT 0,
  done tinyint NOT NULL DEFAULT 0,
  updated_at datetime(6) NOT NULL,
  PRIMARY KEY (segment)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync checkpoint: backfill progress'`,
		`CREATE TABLE IF NOT EXISTS ` + s.lanes + ` (
  lane tinyint unsigned NOT NULL,
  lanes tinyint unsigned NOT NULL,
  block int unsigned NOT NULL,
  gtid_set text NOT NULL,
  updated_at datetime(6) NOT NULL,
  PRIMARY KEY (lane)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync checkpoint: parallel apply lanes'`,
		stagesDDL(s.stages),
	}
	for _, q := range stmts {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create checkpoint table in %s (needs CREATE on it): %w", s.schema, err)
		}
	}
	return nil
}

// EnsureProbe creates the latency guard's table if needed. Its failure (a grant missing: the table came after
// the others) costs the guard only, so it is not part of Ensure.
func (s *Store) EnsureProbe(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+s.probe+` (
  id tinyint unsigned NOT NULL,
  at datetime(6) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync: target commit latency probe'`)
	if err != nil {
		return fmt.Errorf("create %s in %s (needs CREATE on it): %w", ProbeTable, s.schema, err)
	}
	return nil
}

// probeRows is how many rows Probe takes turns on: a probe the server still runs after its caller gave up on it
// holds one row's lock, which the next probes do not wait for.
const probeRows = 16

// Probe writes one small row in an autocommit statement, as the app writes each CSMHE row: its duration is the
// target's commit latency (redo and binlog writes, their fsyncs and the group commit queue, a connection
// thread's CPU), which the backfill's latency guard keeps close to what it is without the copy.
func (s *Store) Probe(ctx context.Context) error {
	n := s.probes.Add(1) % probeRows
	_, err := s.db.ExecContext(ctx, "INSERT INTO "+s.probe+" (id, at) VALUES (?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE at = UTC_TIMESTAMP(6)", n)
	return err
}

// Load reads the checkpoint. It returns ErrNone when there is none (including when the tables do not
// exist yet, so read-only commands such as status never create anything).
func (s *Store) Load(ctx context.Context) (*State, error) {
	st := &State{}
	var lastRaw, created, updated sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT format_version, source_table, target_table, flavor, source_server,
		gtid_set, id_boundary, applied_transactions, applied_inserts, applied_updates, applied_deletes,
		DATE_FORMAT(last_event_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'),
		DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f') FROM `+s.state+` WHERE id = 1`).Scan(
		&st.FormatVersion, &st.SourceTable, &st.TargetTable, &st.Flavor, &st.SourceServer, &st.GTID, &st.IDBoundary,
		&st.Applied.Transactions, &st.Applied.Inserts, &st.Applied.Updates, &st.Applied.Deletes,
		&lastRaw, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) || isNoTable(err) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if st.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%w: checkpoint format %d was written by a newer csmh-sync (this one reads %d): upgrade csmh-sync",
			ErrMismatch, st.FormatVersion, FormatVersion)
	}
	st.LastEventAt = parseTime(lastRaw.String)
	st.CreatedAt = parseTime(created.String)
	st.UpdatedAt = parseTime(updated.String)
	if st.Segments, err = s.segments(ctx); err != nil {
		return nil, err
	}
	st.Stops, err = s.StageStops(ctx)
	return st, err
}

// StreamGTID reads the stream position alone: where a new stream session must start, whatever this
// process last believed it committed. The read is a locking one, so it waits for a transaction still
// committing a newer position: the commit of a process that was killed (or whose connection broke) after
// sending COMMIT goes on in the server, holding the state row's lock until it is done, and a plain read
// could return the position before it and make the new session apply its transactions again.
func (s *Store) StreamGTID(ctx context.Context) (string, error) {
	var g string
	err := s.lockedRead(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT gtid_set FROM `+s.state+` WHERE id = 1 FOR UPDATE`).Scan(&g)
	})
	if errors.Is(err, sql.ErrNoRows) || isNoTable(err) {
		return "", ErrNone
	}
	if err != nil {
		return "", fmt.Errorf("read checkpoint position: %w", err)
	}
	return g, nil
}

// lockedRead runs f, which holds locking reads, in a transaction it then rolls back.
func (s *Store) lockedRead(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return f(tx)
}

// RaiseIDBoundary moves the id boundary from from up to to, only if it still is from, and reports whether it
// moved. The caller must have made sure that no row at or above from and below to was written by the app
// (and that none can be any more: the target's AUTO_INCREMENT is at least to).
func (s *Store) RaiseIDBoundary(ctx context.Context, from, to uint64) (bool, error) {
	if to <= from {
		return false, nil
	}
	res, err := s.db.ExecContext(ctx, `UPDATE `+s.state+` SET id_boundary = ?, updated_at = ? WHERE id = 1 AND id_boundary = ?`,
		to, time.Now().UTC(), from)
	if err != nil {
		return false, fmt.Errorf("raise the id boundary in the checkpoint: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// IDBoundary reads the id boundary alone.
func (s *Store) IDBoundary(ctx context.Context) (uint64, error) {
	var b uint64
	err := s.db.QueryRowContext(ctx, `SELECT id_boundary FROM `+s.state+` WHERE id = 1`).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) || isNoTable(err) {
		return 0, ErrNone
	}
	if err != nil {
		return 0, fmt.Errorf("read the id boundary: %w", err)
	}
	return b, nil
}

func (s *Store) segments(ctx context.Context) ([]Segment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT segment, start_id, end_id, next_id, rows_copied, done,
		DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f') FROM `+s.fill+` ORDER BY segment`)
	if isNoTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read backfill checkpoint: %w", err)
	}
	defer rows.Close()
	var out []Segment
	for rows.Next() {
		var g Segment
		var upd string
		if err := rows.Scan(&g.ID, &g.Start, &g.End, &g.Next, &g.Rows, &g.Done, &upd); err != nil {
			return nil, err
		}
		g.UpdatedAt = parseTime(upd)
		out = append(out, g)
	}
	return out, rows.Err()
}

// Init writes the first checkpoint unless one exists, and returns the one in force. A checkpoint of another
// migration (other tables or flavor) is an ErrMismatch: it is never overwritten.
func (s *Store) Init(ctx context.Context, first State) (*State, error) {
	now := time.Now().UTC()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("write first checkpoint: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `INSERT IGNORE INTO `+s.state+` (id, format_version, source_table, target_table,
		flavor, source_server, gtid_set, id_boundary, created_at, updated_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		FormatVersion, first.SourceTable, first.TargetTable, first.Flavor, first.SourceServer, first.GTID,
		first.IDBoundary, now, now)
	if err != nil {
		return nil, fmt.Errorf("write first checkpoint: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		// A new migration: lane rows left by an earlier one describe other transactions. Cleared in the
		// transaction that creates the state row, so no crash leaves the new checkpoint beside old lanes.
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+s.lanes); err != nil && !isNoTable(err) {
			return nil, fmt.Errorf("clear old apply lanes: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+s.stages); err != nil && !isNoTable(err) {
			return nil, fmt.Errorf("clear old stage stops: %w", err)
		}
	}
	if err := dbconn.Commit(ctx, tx); err != nil {
		return nil, fmt.Errorf("write first checkpoint: %w", err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	if st.SourceTable != first.SourceTable || st.TargetTable != first.TargetTable || st.Flavor != first.Flavor {
		return nil, fmt.Errorf("%w: it migrates %s (%s) → %s, not %s (%s) → %s: use the same tables, or drop %s.%s and %s.%s to start over",
			ErrMismatch, st.SourceTable, st.Flavor, st.TargetTable, first.SourceTable, first.Flavor, first.TargetTable,
			s.schema, StateTable, s.schema, BackfillTable)
	}
	return st, nil
}

// StreamProgress is what one applied batch adds to the checkpoint.
type StreamProgress struct {
	GTID        string
	Added       Counters
	LastEventAt time.Time
}

// SaveStream records the stream position inside the caller's transaction, the one that applied the rows.
// epoch is the fence epoch read before the stream position was loaded (see Fence).
func (s *Store) SaveStream(ctx context.Context, tx Execer, epoch uint64, p StreamProgress) error {
	if err := s.check(ctx, tx, epoch); err != nil {
		return err
	}
	var last any
	if !p.LastEventAt.IsZero() {
		last = p.LastEventAt.UTC()
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+s.state+` SET gtid_set = ?,
		applied_transactions = applied_transactions + ?, applied_inserts = applied_inserts + ?,
		applied_updates = applied_updates + ?, applied_deletes = applied_deletes + ?,
		last_event_at = COALESCE(?, last_event_at), updated_at = ? WHERE id = 1`,
		p.GTID, p.Added.Transactions, p.Added.Inserts, p.Added.Updates, p.Added.Deletes, last, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("save stream checkpoint: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("save stream checkpoint: %w (the state row is gone)", ErrNone)
	}
	return nil
}

// Lane is one extra apply lane's progress: with Lanes lanes dealing ids in blocks of Block, lane Lane has
// applied its share of every transaction in GTID.
type Lane struct {
	Lane, Lanes, Block int
	GTID               string
}

// SaveLane records a lane's position inside the transaction that applied its share of a batch.
func (s *Store) SaveLane(ctx context.Context, tx Execer, epoch uint64, l Lane) error {
	if err := s.check(ctx, tx, epoch); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+s.lanes+` (lane, lanes, block, gtid_set, updated_at) VALUES (?, ?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE lanes = VALUES(lanes), block = VALUES(block), gtid_set = VALUES(gtid_set), updated_at = VALUES(updated_at)`,
		l.Lane, l.Lanes, l.Block, l.GTID, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("save apply lane checkpoint: %w", err)
	}
	return nil
}

// Lanes reads the lane rows (none when the table does not exist), with a locking read for the same reason as
// StreamGTID.
func (s *Store) Lanes(ctx context.Context) ([]Lane, error) {
	var out []Lane
	err := s.lockedRead(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT lane, lanes, block, gtid_set FROM `+s.lanes+` ORDER BY lane FOR UPDATE`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l Lane
			if err := rows.Scan(&l.Lane, &l.Lanes, &l.Block, &l.GTID); err != nil {
				return err
			}
			out = append(out, l)
		}
		return rows.Err()
	})
	if isNoTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read apply lane checkpoint: %w", err)
	}
	return out, nil
}

// PlanSegments writes the backfill plan if none exists and returns the plan in force: a restart always
// continues the plan (and the id range) captured at the first start.
func (s *Store) PlanSegments(ctx context.Context, plan []Segment) ([]Segment, error) {
	have, err := s.segments(ctx)
	if err != nil || len(have) > 0 {
		return have, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	now := time.Now().UTC()
	for _, g := range plan {
		if _, err := tx.ExecContext(ctx, `INSERT IGNORE INTO `+s.fill+` (segment, start_id, end_id, next_id, rows_copied, done, updated_at)
			VALUES (?, ?, ?, ?, 0, ?, ?)`, g.ID, g.Start, g.End, g.Next, g.Done, now); err != nil {
			return nil, fmt.Errorf("write backfill plan: %w", err)
		}
	}
	if err := dbconn.Commit(ctx, tx); err != nil {
		return nil, fmt.Errorf("write backfill plan: %w", err)
	}
	return s.segments(ctx)
}

// SaveSegment moves a segment's progress from one state to the next inside the caller's transaction, the one
// that wrote the chunk's rows. epoch is the fence epoch read before from was loaded (see Fence).
//
// The update is a compare-and-set on from: it names the state the chunk was planned from, and an UPDATE reads
// the latest committed row (waiting for a commit still in flight). A process that died with its commit in
// flight may have moved the segment after this process loaded it; then this chunk's INSERT IGNORE found those
// rows present and counted none of them, and writing to.Rows would erase the dead process's count. Instead
// the write fails with ErrSegmentMoved: the caller rolls back, reloads and goes on from the moved state.
//
// The segment's end is compared as a range: SplitSegment may have lowered it since from was read (ends only
// shrink), and the chunk, which ends at to.Next-1, still belongs to the segment if the end is at or above
// that id; done is then set from the committed end, not from.End. A chunk that reaches past the committed
// end, into the ids a split gave another worker, fails with ErrSegmentMoved.
func (s *Store) SaveSegment(ctx context.Context, tx Execer, epoch uint64, from, to Segment) error {
	if err := s.check(ctx, tx, epoch); err != nil {
		return err
	}
	hi := to.Next - 1 // the chunk's last id
	res, err := tx.ExecContext(ctx, `UPDATE `+s.fill+` SET next_id = ?, rows_copied = ?, done = (? >= end_id), updated_at = ?
		WHERE segment = ? AND next_id = ? AND rows_copied = ? AND done = ? AND end_id BETWEEN ? AND ?`,
		to.Next, to.Rows, hi, time.Now().UTC(), to.ID, from.Next, from.Rows, from.Done, hi, from.End)
	if err != nil {
		return fmt.Errorf("save backfill checkpoint: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("save backfill checkpoint: %w", err)
	} else if n != 1 {
		return fmt.Errorf("%w: segment %d is no longer at id %d or now ends below id %d", ErrSegmentMoved, to.ID, from.Next, hi)
	}
	return nil
}

// Quoted returns the quoted names of the state and backfill tables, for callers that join them into SQL.
func (s *Store) Quoted() (state, backfill string) { return s.state, s.fill }

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05.000000", s, time.UTC)
	if err != nil {
		return time.Time{}
	}
	return t
}

func isNoTable(err error) bool { return containsCode(err, 1146) }
