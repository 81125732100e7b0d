// Package metrics defines csmh-sync's Prometheus collectors. Nothing registers globally: the daemon builds
// one Metrics on its own registry and tests build theirs on prometheus.NewRegistry().
package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/csmh-sync/csmh-sync/internal/buildinfo"
)

// Metrics holds every collector. A nil *Metrics is not valid; use New or Discard.
type Metrics struct {
	// Replication.
	Lag               prometheus.Gauge
	TxBehind          prometheus.Gauge
	AppliedRows       *prometheus.CounterVec // op = insert|update|delete
	AppliedTx         prometheus.Counter
	SourceWrites      prometheus.Counter
	Connected         prometheus.Gauge
	CheckpointAge     prometheus.Gauge
	RetentionHeadroom prometheus.Gauge
	SourceIDUsed      prometheus.Gauge
	IDRunway          prometheus.Gauge

	// Backfill.
	RowsCopied    prometheus.Counter
	BytesCopied   prometheus.Counter
	Progress      prometheus.Gauge
	ETA           prometheus.Gauge
	ThrottledSecs prometheus.Counter
	// TargetRedoFill is the target's redo log use as a fraction of the age at which InnoDB stops every writer
	// (NaN until read, or where the server does not show it).
	TargetRedoFill prometheus.Gauge
	// RedoTrickled counts chunks started one at a time while the redo log was above --max-redo-fill.
	RedoTrickled prometheus.Counter
	// TargetLatencyRise is how far the target's commit latency runs above its latency without the copy (the
	// median of the latency guard's last probes); BackfillPause what each chunk start waits for it.
	TargetLatencyRise prometheus.Gauge
	BackfillPause     prometheus.Gauge
	// ChunkDeadlines counts chunks rolled back because they held their source rows for the chunk deadline.
	ChunkDeadlines prometheus.Counter
	// SegmentSplits counts backfill segments split so an idle worker takes half of a busy one's rows.
	SegmentSplits prometheus.Counter
	Paused        prometheus.Gauge
	BackfillDone  prometheus.Gauge
	// RateLimit is the backfill's rows-per-second limit in force: --max-rows-per-second, or what POST /rate set.
	RateLimit prometheus.Gauge

	// StageStopped is 1 for the stage that stopped on its own while the daemon runs on, on the series of the
	// reason it stopped for, and 0 on every other series; stage = backfill, reason from a fixed set.
	StageStopped *prometheus.GaugeVec

	// Verify.
	VerifyChunks *prometheus.CounterVec // result = equal|different
}

// New creates the collectors and registers them (and the Go/process collectors) on reg.
func New(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		Lag:               g("csmh_sync_replication_lag_seconds", "Age of the oldest source change not yet applied to the target; 0 when caught up (proven by a heartbeat)."),
		TxBehind:          g("csmh_sync_replication_transactions_behind", "Source transactions executed but not yet in the checkpoint."),
		AppliedRows:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "csmh_sync_replication_applied_rows_total", Help: "Row changes applied to the target, by operation."}, []string{"op"}),
		AppliedTx:         c("csmh_sync_replication_applied_transactions_total", "Source transactions applied (or skipped as not touching the table) and checkpointed."),
		SourceWrites:      c("csmh_sync_source_writes_total", "Source transactions seen in the binlog, any table."),
		Connected:         g("csmh_sync_replication_connected", "1 while the binlog stream is connected."),
		CheckpointAge:     g("csmh_sync_checkpoint_age_seconds", "Seconds since the stream checkpoint last advanced."),
		RetentionHeadroom: g("csmh_sync_binlog_retention_headroom_seconds", "Seconds until the binlog holding the checkpoint could be purged by the source's expiry setting (+Inf when it never expires)."),
		SourceIDUsed:      g("csmh_sync_source_id_used_ratio", "Source AUTO_INCREMENT / 2147483647: how much of CSMH's signed int id space is used."),
		IDRunway:          g("csmh_sync_id_runway_ids", "Ids left before copied source ids reach the first app-written id in the target."),
		RowsCopied:        c("csmh_sync_backfill_rows_copied_total", "Rows copied by the backfill."),
		BytesCopied:       c("csmh_sync_backfill_bytes_copied_total", "Approximate bytes of row data copied by the backfill."),
		Progress:          g("csmh_sync_backfill_progress_ratio", "Fraction of the backfill id range copied, 0 to 1."),
		ETA:               g("csmh_sync_backfill_eta_seconds", "Estimated seconds until the backfill finishes at the recent rate."),
		ThrottledSecs:     c("csmh_sync_backfill_throttled_seconds_total", "Seconds the backfill waited because of throttling (rate limit, load, replica lag)."),
		TargetLatencyRise: g("csmh_sync_target_commit_latency_rise_seconds", "How far the target's commit latency (the backfill's probe, a one-row autocommit write) runs above its latency without the copy; the backfill's pauses grow above --max-latency-rise."),
		BackfillPause:     g("csmh_sync_backfill_pause_seconds", "The pause every backfill chunk start waits so the target's commit latency stays within --max-latency-rise (up to 1.5 s once a minute, while the guard times the target without the copy)."),
		TargetRedoFill:    g("csmh_sync_target_redo_fill_ratio", "The target's redo log use (checkpoint age) as a fraction of the age at which InnoDB makes every writer wait; above --max-redo-fill the backfill starts one chunk every 100 ms."),
		RedoTrickled:      c("csmh_sync_backfill_redo_trickled_chunks_total", "Backfill chunks started while the target's redo log was above --max-redo-fill: one every 100 ms for all workers instead of as fast as they finish."),
		ChunkDeadlines:    c("csmh_sync_backfill_chunk_deadlines_total", "Backfill chunks rolled back and read again because they held their source rows locked for the chunk deadline."),
		SegmentSplits:     c("csmh_sync_backfill_segment_splits_total", "Backfill segments split at their row median so an idle worker copies the upper half."),
		Paused:            g("csmh_sync_backfill_paused", "1 while the backfill is paused by an operator (POST /pause)."),
		BackfillDone:      g("csmh_sync_backfill_done", "1 when the backfill has copied its whole range."),
		RateLimit:         g("csmh_sync_backfill_max_rows_per_second", "The backfill's rate limit in force, rows per second (0 = none): --max-rows-per-second, or what POST /rate set since the start."),
		StageStopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "csmh_sync_stage_stopped",
			Help: "1 on the series of the reason a stage (backfill) stopped for while the daemon runs on (POST /resume restarts it), else 0."},
			[]string{"stage", "reason"}),
		VerifyChunks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "csmh_sync_verify_chunks_total", Help: "Verify chunks checked, by result."}, []string{"result"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "csmh_sync_build_info", Help: "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": buildinfo.Version, "goversion": buildinfo.GoVersion()}})
	info.Set(1)
	// Not measured yet is not zero: a 0 would look like "no headroom" or "no runway" to an alert rule.
	m.RetentionHeadroom.Set(math.NaN())
	m.IDRunway.Set(math.NaN())
	m.SourceIDUsed.Set(math.NaN())
	m.TargetRedoFill.Set(math.NaN())
	m.TargetLatencyRise.Set(math.NaN())
	for _, op := range []string{"insert", "update", "delete"} {
		m.AppliedRows.WithLabelValues(op)
	}
	reg.MustRegister(m.Lag, m.TxBehind, m.AppliedRows, m.AppliedTx, m.SourceWrites, m.Connected, m.CheckpointAge,
		m.RetentionHeadroom, m.SourceIDUsed, m.IDRunway, m.RowsCopied, m.BytesCopied, m.Progress, m.ETA,
		m.ThrottledSecs, m.TargetRedoFill, m.RedoTrickled, m.TargetLatencyRise, m.BackfillPause, m.ChunkDeadlines, m.SegmentSplits, m.Paused, m.BackfillDone, m.RateLimit, m.StageStopped, m.VerifyChunks, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Discard returns collectors registered nowhere, for one-shot commands and tests that do not scrape.
func Discard() *Metrics { return New(prometheus.NewRegistry()) }
