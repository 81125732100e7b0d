package runner

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/throttle"
)

func TestStopReasons(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("backfill segment 0 at id 1: backfill throttle: %w", err) }
	for _, c := range []struct {
		err  error
		want string
	}{
		{wrap(fmt.Errorf("%w: Threads_running 17 > 8", throttle.ErrCriticalLoad)), "critical_load"},
		{wrap(fmt.Errorf("%w: %w", throttle.ErrReplica, throttle.ErrNotReplica)), "replica"},
		{wrap(fmt.Errorf("%w: warning 1366", backfill.ErrSchema)), "schema"},
		{fmt.Errorf("%w: segment ends at the boundary", backfill.ErrRange), "range"},
		{fmt.Errorf("%w: load-data refused", backfill.ErrConfig), "config"},
		{errors.New("Error 1114: The table is full"), "error"},
	} {
		if got := backfillStopReason(c.err); got != c.want || !slices.Contains(backfillStopReasons, got) {
			t.Errorf("backfillStopReason(%v) = %q, want %q (one of %v)", c.err, got, c.want, backfillStopReasons)
		}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w (`ALTER TABLE …`, transaction 0-1-9)", replication.ErrDDL), "ddl"},
		{fmt.Errorf("%w: id 1000000", replication.ErrIDCollision), "id_collision"},
		{checkpoint.AutoIncrementBelow(table.Name{Schema: "s", Table: "t"}, 2001, 1_000_000), "auto_increment"},
		{fmt.Errorf("%w: turn it off", dbconn.ErrBinlogCompression), "binlog_compression"},
		{replication.ErrPurged, "purged"},
		{replication.ErrDiverged, "diverged"},
		// Found by the resume validation at start, before the stream runs (checkResumable's wrapping).
		{fmt.Errorf("%w: %w: the source has purged binlogs the checkpoint needs", ErrResume, replication.ErrPurged), "purged"},
		{fmt.Errorf("%w: %w: the checkpoint holds transactions the source never executed", ErrResume, replication.ErrDiverged), "diverged"},
		{replication.ErrSchema, "schema"},
		{fmt.Errorf("%w: %w: uuid:mytag:5", replication.ErrUnsupported, replication.ErrTaggedGTID), "tagged_gtid"},
		{replication.ErrUnsupported, "unsupported"},
		{fmt.Errorf("%w (LOST_EVENTS at file:bin.000002:786)", replication.ErrIncident), "incident"},
		{fmt.Errorf("%w (error 1236: bogus data in log event)", replication.ErrBinlogRead), "binlog_unreadable"},
		{fmt.Errorf("%w: the source dropped the binlog stream", replication.ErrServerIDInUse), "server_id"},
		{errors.New("something else"), "error"},
	} {
		if got := streamStopReason(c.err); got != c.want || !slices.Contains(streamStopReasons, got) {
			t.Errorf("streamStopReason(%v) = %q, want %q (one of %v)", c.err, got, c.want, streamStopReasons)
		}
	}
}

// prepare's refusals that are the stream's stops, and only those, are recorded as such.
func TestStartStreamStop(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: %w: purged", ErrResume, replication.ErrPurged), true},
		{fmt.Errorf("%w: %w: never executed", ErrResume, replication.ErrDiverged), true},
		{checkpoint.AutoIncrementBelow(table.Name{Schema: "s", Table: "t"}, 2001, 1_000_000), true},
		{fmt.Errorf("%w: checkpoint position: bad", ErrResume), false},
		{fmt.Errorf("%w: other tables", checkpoint.ErrMismatch), false},
		{fmt.Errorf("%w: --position", ErrUsage), false},
	} {
		if got := startStreamStop(c.err); got != c.want {
			t.Errorf("startStreamStop(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// Every reason of either stage has its own way to continue; only "error" gets the generic one, and only the
// backfill's are lifted by POST /resume (a stopped stream has ended the daemon).
func TestStopFixes(t *testing.T) {
	for stage, reasons := range map[string][]string{checkpoint.StageBackfill: backfillStopReasons, checkpoint.StageStream: streamStopReasons} {
		generic := stopFix(checkpoint.StageStop{Stage: stage, Reason: "no such reason"})
		for _, r := range reasons {
			fix := stopFix(checkpoint.StageStop{Stage: stage, Reason: r})
			if (fix == generic) != (r == "error") {
				t.Errorf("stopFix(%s, %s) = %q; the generic fix is %q", stage, r, fix, generic)
			}
			if strings.Contains(fix, "POST /resume") != (stage == checkpoint.StageBackfill) {
				t.Errorf("stopFix(%s, %s) = %q: POST /resume is for the backfill's stops only", stage, r, fix)
			}
			if !strings.Contains(fix, "restart 'run'") && !strings.Contains(fix, "start over") && !strings.Contains(fix, "restart with 'run") {
				t.Errorf("stopFix(%s, %s) = %q: name the restart or the start-over", stage, r, fix)
			}
		}
	}
}

// POST /resume lifts a pause; on a stopped backfill it also clears the stop (metric and /readyz at once) and
// wakes the stage exactly once, however often it is sent.
func TestBackfillStageResume(t *testing.T) {
	db, err := sql.Open("mysql", "u@tcp(127.0.0.1:1)/") // never connected
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := table.Name{Schema: "s", Table: "t"}
	m := metrics.Discard()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bf, err := backfill.New(db, db, checkpoint.New(db, "s"), m, log, backfill.Config{SourceTable: name, TargetTable: name})
	if err != nil {
		t.Fatal(err)
	}
	s := newBackfillStage(bf, checkpoint.New(db, "s"), m, log, nil, false)
	gauge := func(reason string) float64 {
		var g dto.Metric
		if err := m.StageStopped.WithLabelValues("backfill", reason).Write(&g); err != nil {
			t.Fatal(err)
		}
		return g.GetGauge().GetValue()
	}
	for _, r := range backfillStopReasons {
		if v := gauge(r); v != 0 {
			t.Fatalf("csmh_sync_stage_stopped{reason=%q} = %v before any stop, want 0", r, v)
		}
	}
	bf.Pause()
	if got := s.Resume(); got != "backfill resumed" || bf.Progress().Paused {
		t.Fatalf("Resume of a paused backfill: %q, paused %v", got, bf.Progress().Paused)
	}
	if len(s.restart) != 0 {
		t.Fatal("Resume of a running backfill asked for a restart")
	}

	s.mu.Lock()
	s.stop = &checkpoint.StageStop{Stage: "backfill", Reason: "critical_load", Message: "load", At: time.Now()}
	s.setMetric("critical_load")
	s.mu.Unlock()
	if v, w := gauge("critical_load"), gauge("error"); v != 1 || w != 0 {
		t.Fatalf("stopped: critical_load %v, error %v; want 1 and 0", v, w)
	}
	p := &probe{bf: bf, stage: s}
	if ok, why := p.Ready(); ok || !strings.Contains(why, "backfill stopped (critical_load): load") {
		t.Fatalf("Ready while stopped = %v %q", ok, why)
	}
	if got := s.Resume(); !strings.Contains(got, "started again") || !strings.Contains(got, "critical_load") {
		t.Fatalf("Resume of a stopped backfill answered %q", got)
	}
	if got := s.Resume(); got != "backfill resumed" {
		t.Fatalf("second Resume answered %q", got)
	}
	if len(s.restart) != 1 || s.stopped() != nil || gauge("critical_load") != 0 {
		t.Fatalf("after Resume: %d restarts pending, stop %+v, gauge %v; want 1, none, 0", len(s.restart), s.stopped(), gauge("critical_load"))
	}
	if ok, why := p.Ready(); ok || strings.Contains(why, "stopped") {
		t.Fatalf("Ready after Resume = %v %q; want 'not done', not 'stopped'", ok, why)
	}
}

func TestStatusNamesStops(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	st := &checkpoint.State{SourceTable: "edxapp.a", TargetTable: "edxapp_csmh.b", GTID: "0-1-9",
		Segments: []checkpoint.Segment{{ID: 0, Start: 1, End: 100, Next: 51, Rows: 50}},
		Stops:    []checkpoint.StageStop{{Stage: "backfill", Reason: "critical_load", Message: "Threads_running 17 > 8", At: at}}}
	rep := buildStatus(st)
	if rep.Stage != "backfill-stopped" {
		t.Fatalf("stage %q, want backfill-stopped", rep.Stage)
	}
	var out bytes.Buffer
	printStatus(&out, rep)
	if !strings.Contains(out.String(), "stopped:      backfill at 2026-12-03T10:00:00Z, critical_load: Threads_running 17 > 8") ||
		!strings.Contains(out.String(), "POST /resume") {
		t.Fatalf("status text:\n%s", out.String())
	}

	// A stream stop ended the daemon: the backfill is not stopped on its own.
	st.Stops = []checkpoint.StageStop{{Stage: "stream", Reason: "ddl", Message: "source table changed by DDL", At: at}}
	if rep = buildStatus(st); rep.Stage != "backfill" || len(rep.Stops) != 1 {
		t.Fatalf("with a stream stop: stage %q, stops %+v", rep.Stage, rep.Stops)
	}
	out.Reset()
	printStatus(&out, rep)
	if !strings.Contains(out.String(), "stopped:      stream at") || strings.Contains(out.String(), "POST /resume") ||
		!strings.Contains(out.String(), "to continue: adapt the target table, run 'preflight', then restart with 'run --accept-ddl <transaction>'") {
		t.Fatalf("status text with a stream stop:\n%s", out.String())
	}

	// No stops: an empty list in JSON, not null.
	st.Stops = nil
	b, err := json.Marshal(buildStatus(st))
	if err != nil || !strings.Contains(string(b), `"stops":[]`) {
		t.Fatalf("JSON without stops: %s %v", b, err)
	}
}
