package checkpoint

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// Stage names in csmh_sync_stages.
const (
	StageBackfill = "backfill"
	StageStream   = "stream"
)

// maxStopMessage bounds the stored message; an error chain is a line or two.
const maxStopMessage = 2000

// StageStop records that a stage stopped for a reason of its own and was not started again since.
type StageStop struct {
	Stage   string    `json:"stage"`   // StageBackfill or StageStream
	Reason  string    `json:"reason"`  // a short class from a fixed set, e.g. critical_load
	Message string    `json:"message"` // the error, as logged
	At      time.Time `json:"at"`
}

// csmh_sync_stages came after format version 1 without changing it: only this record lives there, older
// builds never read it, and a checkpoint without the table means no stage has stopped.
func stagesDDL(name string) string {
	return `CREATE TABLE IF NOT EXISTS ` + name + ` (
  stage varchar(16) NOT NULL,
  reason varchar(32) NOT NULL,
  message text NOT NULL,
  stopped_at datetime(6) NOT NULL,
  PRIMARY KEY (stage)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='csmh-sync checkpoint: stages stopped'`
}

// SaveStageStop records a stage's stop, replacing an earlier record of the same stage. Like every checkpoint
// write it is fenced: a process that lost its migration lock records nothing.
func (s *Store) SaveStageStop(ctx context.Context, st StageStop) error {
	msg := st.Message
	if len(msg) > maxStopMessage {
		msg = msg[:maxStopMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	at := st.At
	if at.IsZero() {
		at = time.Now()
	}
	err := s.fenced(ctx, `INSERT INTO `+s.stages+` (stage, reason, message, stopped_at) VALUES (?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE reason = VALUES(reason), message = VALUES(message), stopped_at = VALUES(stopped_at)`,
		st.Stage, st.Reason, msg, at.UTC())
	if err != nil {
		return fmt.Errorf("record the %s stop in the checkpoint: %w", st.Stage, err)
	}
	return nil
}

// ClearStageStop removes a stage's stop record: the stage runs again.
func (s *Store) ClearStageStop(ctx context.Context, stage string) error {
	if err := s.fenced(ctx, `DELETE FROM `+s.stages+` WHERE stage = ?`, stage); err != nil {
		return fmt.Errorf("clear the %s stop in the checkpoint: %w", stage, err)
	}
	return nil
}

// StageStops reads the stop records, in stage order (none when the table does not exist).
func (s *Store) StageStops(ctx context.Context) ([]StageStop, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT stage, reason, message, DATE_FORMAT(stopped_at, '%Y-%m-%d %H:%i:%s.%f')
		FROM `+s.stages+` ORDER BY stage`)
	if isNoTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stage stops: %w", err)
	}
	defer rows.Close()
	var out []StageStop
	for rows.Next() {
		var st StageStop
		var at string
		if err := rows.Scan(&st.Stage, &st.Reason, &st.Message, &at); err != nil {
			return nil, fmt.Errorf("read stage stops: %w", err)
		}
		st.At = parseTime(at)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stage stops: %w", err)
	}
	return out, nil
}

// fenced runs one statement in a transaction that first checks the fence in the current epoch.
func (s *Store) fenced(ctx context.Context, q string, args ...any) error {
	epoch := s.Epoch()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.check(ctx, tx, epoch); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return err
	}
	return dbconn.Commit(ctx, tx)
}
