package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/runner"
	"github.com/csmh-sync/csmh-sync/throttle"
)

// withLog fills the logger and output once flags are parsed (the logger depends on --log-format).
type withLog struct {
	command
	bind func()
}

func (w withLog) Validate() error { w.bind(); return w.command.Validate() }

func (w withLog) Run(ctx context.Context) (int, error) { return w.command.Run(ctx) }

func buildPreflight(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	p := &runner.Preflight{}
	commonFlags(fs, &p.Common, lf)
	fs.BoolVar(&p.JSON, "json", false, "print the findings as JSON")
	fs.StringVar(&p.Position, "position", runner.PositionAuto, "how run will follow the source's binlog (its --position): auto, gtid or file; the GTID findings and grants are that mode's")
	return withLog{p, func() { p.Out, p.Log = env.stdout, env.log }}
}

func buildStatus(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	s := &runner.Status{}
	commonFlags(fs, &s.Common, lf)
	fs.BoolVar(&s.JSON, "json", false, "print the status as JSON")
	return withLog{s, func() { s.Out, s.Log = env.stdout, env.log }}
}

func runFlags(fs *pflag.FlagSet, r *runner.Run, lf *logFlags) {
	commonFlags(fs, &r.Common, lf)
	b := &r.Backfill
	fs.Uint64Var(&b.StartID, "start-id", 0, "first id to copy (default: the source's smallest id at the first start); later, below the plan's start, extends the plan")
	fs.Uint64Var(&b.EndID, "end-id", 0, "last id to copy (default: the source's largest id at the first start); later, above the plan's end, extends the plan")
	fs.IntVar(&b.Workers, "workers", 0, "parallel backfill workers on disjoint id segments, fixed at the first start (default 2)")
	fs.Int64Var(&b.ChunkBytes, "chunk-bytes", 8<<20, "memory budget of one backfill chunk, bytes")
	fs.BoolVar(&r.AdoptExistingRows, "adopt-existing-rows", false, "at the first start, keep rows an earlier copy left below the id boundary (then run 'verify --repair' after the backfill)")
	fs.StringVar(&b.WriteMethod, "write-method", "auto", "how the cross-server backfill writes: load-data (LOAD DATA LOCAL INFILE; needs local_infile=ON on the target), insert (multi-row INSERT IGNORE), or auto (load-data where the target allows it)")
	fs.StringVar(&b.SameServer, "same-server", runner.SameServerAuto, "copy with INSERT … SELECT on one server: auto (where a named lock proves source and target are one server and the target's user can read the source table), yes (required; refused unless proven), no (always copy across connections)")
	fs.DurationVar(&b.ChunkTime, "chunk-time", backfill.DefaultChunkTime, "target duration of one backfill chunk, read to target commit: how long the app's writes of its rows may wait")
	fs.DurationVar(&b.ChunkDeadline, "chunk-deadline", 0, "longest a backfill chunk may hold its source rows locked before it is rolled back and read again, smaller (0 = 4 × --chunk-time, at least 2s)")
	fs.Float64Var(&b.MaxRowsPerSecond, "max-rows-per-second", 0, "backfill rate limit (0 = none)")
	fs.Float64Var(&b.MaxRedoFill, "max-redo-fill", throttle.DefaultMaxRedoFill, "start one backfill chunk every 100 ms, no more, while the target's redo log holds more than this fraction of what InnoDB allows before every writer, the app's too, waits for page flushing (0 = off)")
	fs.DurationVar(&b.MaxLatencyRise, "max-latency-rise", throttle.DefaultMaxLatencyRise, "pace the backfill so the target's commit latency, timed every 100 ms, stays within this of its latency without the copy: the app's writes wait in the same queues (0 = off)")
	fs.Int64Var(&b.MaxThreadsRunning, "max-threads-running", 0, "pause the backfill while the source's Threads_running is above this (0 = off)")
	fs.Int64Var(&b.CriticalThreadsRunning, "critical-threads-running", 0, "stop the backfill when the source's Threads_running is above this (0 = off)")
	fs.StringVar(&b.Replica.DSN, "replica-dsn", "", "a replica of the source whose lag throttles the backfill")
	fs.StringVar(&b.Replica.PasswordFile, "replica-password-file", "", "file holding the replica password")
	tlsFlags(fs, "replica", &b.Replica.TLS)
	fs.DurationVar(&b.MaxReplicaLag, "max-replica-lag", 10*time.Second, "pause the backfill while the replica lags more than this")
	fs.DurationVar(&b.ProgressEvery, "progress-every", 10*time.Second, "progress log interval when stdout is not a terminal")
	fs.StringVar(&r.Position, "position", runner.PositionAuto, "how the stream follows the source's binlog: auto (GTIDs where the source has them, else binlog file/position; a checkpoint keeps its mode), gtid, or file")
	fs.StringVar(&r.AdminTokenFile, "admin-token-file", "", "file holding the bearer token POST /pause, /resume and /rate require (without it they answer only this host, on a loopback --metrics-addr)")
}

func buildRun(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	r := &runner.Run{}
	runFlags(fs, r, lf)
	fs.IntVar(&r.Stream.BatchRows, "batch-rows", 2000, "row changes applied per target transaction")
	fs.IntVar(&r.Stream.ApplyLanes, "apply-lanes", replication.DefaultApplyLanes, "target connections a large batch is applied over in parallel (1-16; more on targets with more cores)")
	fs.DurationVar(&r.Stream.BatchDelay, "batch-delay", 50*time.Millisecond, "how long a batch waits for more changes")
	fs.DurationVar(&r.Stream.Heartbeat, "heartbeat", time.Second, "binlog heartbeat period")
	fs.StringVar(&r.Stream.AcceptIncident, "accept-incident", "", "the incident event in the source's binlog the stream stopped at (file:binlog.N:offset, as its message names it), to stream past it; verify's proofs are dropped, so run verify --repair before cutover")
	fs.StringVar(&r.Stream.AcceptDDL, "accept-ddl", "", "the source DDL the stream stopped at (its GTID, or file:binlog.N:offset in file mode), once the target is adapted to it")
	fs.DurationVar(&r.ReadyMaxLag, "ready-max-lag", 5*time.Second, "/readyz fails while the lag is above this")
	return withLog{r, func() { r.Log, r.Out, r.TTY = env.log, env.stdout, env.tty }}
}

func buildBackfill(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	r := &runner.Run{BackfillOnly: true}
	runFlags(fs, r, lf)
	return withLog{r, func() { r.Log, r.Out, r.TTY = env.log, env.stdout, env.tty }}
}
