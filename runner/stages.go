package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/throttle"
)

// Why a stage stopped, as the reason label of csmh_sync_stage_stopped and in the checkpoint's stop record: a
// fixed set, so the label's cardinality stays bounded; the error itself is logged and recorded beside it.
var (
	backfillStopReasons = []string{"critical_load", "replica", "schema", "range", "config", "error"}
	streamStopReasons   = []string{"ddl", "id_collision", "auto_increment", "binlog_compression", "purged", "diverged", "schema", "tagged_gtid", "unsupported", "incident", "binlog_unreadable", "server_id", "error"}
)

func backfillStopReason(err error) string {
	switch {
	case errors.Is(err, throttle.ErrCriticalLoad):
		return "critical_load" // --critical-threads-running
	case errors.Is(err, throttle.ErrReplica):
		return "replica" // --replica-dsn unreadable, or not a replica
	case errors.Is(err, backfill.ErrSchema):
		return "schema" // a row the target cannot hold unchanged, or tables that differ
	case errors.Is(err, backfill.ErrRange):
		return "range"
	case errors.Is(err, backfill.ErrConfig):
		return "config"
	}
	return "error"
}

func streamStopReason(err error) string {
	switch {
	case errors.Is(err, replication.ErrDDL):
		return "ddl"
	case errors.Is(err, replication.ErrIDCollision):
		return "id_collision"
	case errors.Is(err, checkpoint.ErrAutoIncrement):
		return "auto_increment" // the target's AUTO_INCREMENT fell below the id boundary
	case errors.Is(err, dbconn.ErrBinlogCompression):
		return "binlog_compression" // the source turned binlog_transaction_compression on
	case errors.Is(err, replication.ErrPurged):
		return "purged"
	case errors.Is(err, replication.ErrDiverged):
		return "diverged"
	case errors.Is(err, replication.ErrSchema):
		return "schema"
	case errors.Is(err, replication.ErrIncident):
		return "incident"
	case errors.Is(err, replication.ErrBinlogRead):
		return "binlog_unreadable"
	case errors.Is(err, replication.ErrServerIDInUse):
		return "server_id" // another replica connected with --server-id
	case errors.Is(err, replication.ErrTaggedGTID):
		return "tagged_gtid" // before unsupported, which it is wrapped with
	case errors.Is(err, replication.ErrUnsupported):
		return "unsupported"
	}
	return "error"
}

// stopFix says how to continue after a recorded stop: what status and cutover print beside it. The stream's
// stops ended the daemon, so each names the restart; the backfill's are lifted in the running daemon.
func stopFix(st checkpoint.StageStop) string {
	if st.Stage == checkpoint.StageBackfill {
		switch st.Reason {
		case "critical_load":
			return "POST /resume to the daemon once the source's Threads_running is lower (or restart 'run' with a higher --critical-threads-running)"
		case "replica":
			return "fix the --replica-dsn replica or its grants, then POST /resume to the daemon (a new DSN: restart 'run')"
		case "schema", "range", "config":
			return "fix the cause the message names, then POST /resume to the daemon or restart 'run'"
		}
		return "read the message and fix the cause, then POST /resume to the daemon or restart 'run'"
	}
	switch st.Reason {
	case "ddl":
		return "adapt the target table, run 'preflight', then restart with 'run --accept-ddl <transaction>' (the GTID or binlog position the message names)"
	case "id_collision":
		return "make room above CSMH's ids ('cutover --bump-auto-increment', docs/runbook.md \"Id runway low\"), then restart 'run'"
	case "binlog_compression":
		return "SET GLOBAL binlog_transaction_compression=OFF on the source (and in its my.cnf or parameter group), then restart 'run'"
	case "auto_increment":
		return "raise CSMHE's AUTO_INCREMENT to the id boundary with the ALTER TABLE the message names, then restart 'run'"
	case "purged":
		return "start over (docs/runbook.md, \"Recover from a purged binlog\") and raise the source's binlog retention"
	case "diverged":
		return "point --source-dsn at the server the copy started from and restart 'run', or start over (docs/runbook.md, \"Recover from a purged binlog\")"
	case "schema":
		return "make the tables match again ('preflight' lists what differs), then restart 'run'"
	case "tagged_gtid":
		return "start over by binlog file and offset, --position file (docs/runbook.md, \"Recover from a purged binlog\"): a GTID position cannot hold a tagged GTID"
	case "unsupported":
		return "fix what the message names on the source (CSMH changed by a statement-format write or an XA transaction: binlog_format=ROW; a binlog file past 4 GiB in file mode), then start over for the affected range"
	case "incident":
		return "restart with 'run --accept-incident <position>' (the binlog position the message names), then 'verify --repair' before cutover: changes the source lost from its binlog are not streamed"
	case "server_id":
		return "restart 'run' with a --server-id that no replica or binlog reader of the source uses (SHOW REPLICAS or SHOW SLAVE HOSTS on the source lists theirs)"
	case "binlog_unreadable":
		return "read the source's error in the message: raise its max_allowed_packet if it names that, then restart 'run'; a binlog mysqlbinlog cannot read either is damaged: start over (docs/runbook.md, \"Recover from a purged binlog\")"
	}
	return "read the message and fix the cause, then restart 'run'"
}

// backfillStage runs the daemon's backfill beside the stream. A backfill that stops for a reason of its own
// (critical load, an unreadable replica, a row the target cannot hold) does not stop the stream: the stage is
// stopped, with its reason in /readyz, csmh_sync_stage_stopped and the checkpoint (for status), until Resume
// starts the backfill again from its checkpoint. The one-shot backfill command returns the stop instead.
type backfillStage struct {
	bf      *backfill.Backfill
	store   *checkpoint.Store
	m       *metrics.Metrics
	log     *slog.Logger
	report  func(ctx context.Context) // the progress reporter, run while the copy runs
	oneShot bool

	restart chan struct{} // Resume of a stopped backfill; buffered, so Resume never blocks
	mu      sync.Mutex
	stop    *checkpoint.StageStop // while stopped
}

func newBackfillStage(bf *backfill.Backfill, store *checkpoint.Store, m *metrics.Metrics, log *slog.Logger,
	report func(context.Context), oneShot bool) *backfillStage {
	s := &backfillStage{bf: bf, store: store, m: m, log: log, report: report, oneShot: oneShot, restart: make(chan struct{}, 1)}
	s.setMetric("")
	return s
}

// run copies the range and returns nil once it is copied, or ctx's error when the run ends. In the daemon a
// stop of the backfill's own is recorded and waits for Resume (or the run's end); the one-shot command
// returns it.
func (s *backfillStage) run(ctx context.Context) error {
	for {
		// Started (again): a stop recorded earlier, by this process or the one before, is over.
		if err := s.store.ClearStageStop(ctx, checkpoint.StageBackfill); err != nil && ctx.Err() == nil {
			s.log.Warn("backfill stop record not cleared; status may show an old stop", "err", err)
		}
		err := s.copy(ctx)
		if err == nil {
			s.log.Info("backfill complete", "rows", s.bf.Progress().Copied)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // the run ends (signal, lock lost, stream stopped); the chunk in flight committed or rolled back
		}
		st := checkpoint.StageStop{Stage: checkpoint.StageBackfill, Reason: backfillStopReason(err), Message: err.Error(), At: time.Now().UTC()}
		if s.oneShot {
			s.record(ctx, st)
			return err
		}
		s.mu.Lock()
		s.stop = &st
		s.setMetric(st.Reason)
		s.mu.Unlock()
		s.log.Error("backfill stopped; the stream goes on. POST /resume starts the backfill again once the cause is gone",
			"reason", st.Reason, "err", err)
		s.record(ctx, st)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.restart:
			s.log.Info("backfill starting again from its checkpoint")
		}
	}
}

// copy runs the backfill once, with the progress reporter beside it.
func (s *backfillStage) copy(ctx context.Context) error {
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.report(rctx) })
	err := s.bf.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

func (s *backfillStage) record(ctx context.Context, st checkpoint.StageStop) {
	if err := s.store.SaveStageStop(ctx, st); err != nil {
		s.log.Warn("backfill stop not recorded in the checkpoint; status will not show it", "err", err)
	}
}

// setMetric sets csmh_sync_stage_stopped{stage="backfill"}: 1 on reason's series, 0 on the others ("" = none).
func (s *backfillStage) setMetric(reason string) {
	for _, r := range backfillStopReasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		s.m.StageStopped.WithLabelValues(checkpoint.StageBackfill, r).Set(v)
	}
}

// stopped returns the stop while the backfill is stopped, else nil.
func (s *backfillStage) stopped() *checkpoint.StageStop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop
}

// Resume lifts a pause and starts a stopped backfill again; it says what it did. Starting again is what a
// restart of the daemon would do, without stopping the stream: the backfill continues every segment from its
// checkpoint, under the same rules. If the cause is still there, it stops again at once, before a chunk.
func (s *backfillStage) Resume() string {
	s.bf.Resume()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop == nil {
		return "backfill resumed"
	}
	reason := s.stop.Reason
	s.stop = nil
	s.setMetric("")
	select {
	case s.restart <- struct{}{}:
	default:
	}
	return fmt.Sprintf("backfill started again (it had stopped: %s)", reason)
}

// startStreamStop reports whether prepare's refusal is the stream's stop, found before the stream runs: the
// binlog the checkpoint needs is purged, the source's history does not hold the checkpoint, or the target's
// AUTO_INCREMENT is below the id boundary. Other refusals (bad flags, tables that differ, another migration's
// checkpoint) are not a stage's.
func startStreamStop(err error) bool {
	return errors.Is(err, replication.ErrPurged) || errors.Is(err, replication.ErrDiverged) || errors.Is(err, checkpoint.ErrAutoIncrement)
}

// recordStreamStop records why the stream stopped (the daemon exits with that error next), so status and
// cutover can say it after the process is gone: a stop of the running stream, or one found at start (purged,
// diverged, auto_increment) before the stream ran. The AUTO_INCREMENT watch's stop is recorded as the
// stream's too: like the stream's own stops it ends the run, and the stream is what would overwrite the
// app's rows.
func recordStreamStop(ctx context.Context, store *checkpoint.Store, log *slog.Logger, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	st := checkpoint.StageStop{Stage: checkpoint.StageStream, Reason: streamStopReason(err), Message: err.Error(), At: time.Now().UTC()}
	if serr := store.SaveStageStop(ctx, st); serr != nil {
		log.Warn("stream stop not recorded in the checkpoint; status will not show it", "err", serr)
	}
}
