package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/internal/secretfile"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/replication"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/throttle"
	"github.com/csmh-sync/csmh-sync/verify"
)

// BackfillOptions are the backfill's flags.
type BackfillOptions struct {
	StartID, EndID         uint64
	Workers                int
	ChunkBytes             int64
	WriteMethod            string
	SameServer             string // SameServerAuto, SameServerYes or SameServerNo
	ChunkTime              time.Duration
	ChunkDeadline          time.Duration // 0 = backfill.DefaultChunkDeadline(ChunkTime)
	MaxRowsPerSecond       float64
	MaxRedoFill            float64       // trickle chunk starts while the target's redo log is fuller than this fraction of InnoDB's limit; 0 = off
	MaxLatencyRise         time.Duration // pace the copy so the target's commit latency stays within this of its latency without it; 0 = off
	MaxThreadsRunning      int64
	CriticalThreadsRunning int64
	Replica                dbconn.Endpoint
	MaxReplicaLag          time.Duration
	ProgressEvery          time.Duration
}

// The values of --same-server: whether the backfill may copy with INSERT … SELECT on the target server.
const (
	SameServerAuto = "auto" // where dbconn.SameServer proves one server and the target may read the source table
	SameServerYes  = "yes"  // required: refused unless proven
	SameServerNo   = "no"   // never
)

// StreamOptions are the binlog stream's flags.
type StreamOptions struct {
	BatchRows  int
	ApplyLanes int // target transactions one batch is applied over
	BatchDelay time.Duration
	Heartbeat  time.Duration
	AcceptDDL  string // GTID of one source DDL the operator has adapted the target to
	// AcceptIncident is the binlog position of one incident event the stream may pass (verify's proofs are
	// dropped first, so cutover compares every chunk).
	AcceptIncident string
}

// Run is `csmh-sync run` (the daemon) and, with BackfillOnly, `csmh-sync backfill`.
type Run struct {
	Common
	Backfill     BackfillOptions
	Stream       StreamOptions
	ReadyMaxLag  time.Duration
	BackfillOnly bool // copy the range and exit; no stream
	// AdminTokenFile holds the bearer token POST /pause, /resume and /rate require (read by Validate); without one
	// they answer only loopback clients of a loopback --metrics-addr.
	AdminTokenFile string
	adminToken     string
	// AdoptExistingRows lets a first start proceed although the target already holds rows in the copied
	// range (an earlier copy): the backfill keeps them as they are, and 'verify --repair' corrects them.
	AdoptExistingRows bool

	Log *slog.Logger
	Out io.Writer // progress display
	TTY bool      // Out is a terminal: redraw a progress bar instead of logging lines

	// Hooks for fault-injection tests; nil in production.
	BackfillHooks backfill.Hooks
	StreamHooks   replication.Hooks
}

// Validate checks every flag, before anything connects.
func (r *Run) Validate() error {
	if err := r.Common.Validate(); err != nil {
		return err
	}
	b := &r.Backfill
	if b.EndID != 0 && b.StartID > b.EndID {
		return fmt.Errorf("%w: --start-id %d is above --end-id %d", ErrUsage, b.StartID, b.EndID)
	}
	if b.Workers < 0 || b.Workers > 64 {
		return fmt.Errorf("%w: --workers %d: use 1 to 64 (0 = the default)", ErrUsage, b.Workers)
	}
	if b.ChunkBytes < 64<<10 {
		return fmt.Errorf("%w: --chunk-bytes %d: use at least 65536 (64 KiB)", ErrUsage, b.ChunkBytes)
	}
	if m := b.WriteMethod; m != "" && m != backfill.WriteAuto && m != backfill.WriteInsert && m != backfill.WriteLoadData {
		return fmt.Errorf("%w: --write-method %q: use %s, %s or %s", ErrUsage, m, backfill.WriteAuto, backfill.WriteInsert, backfill.WriteLoadData)
	}
	switch b.SameServer {
	case "":
		b.SameServer = SameServerAuto
	case SameServerAuto, SameServerYes, SameServerNo:
	default:
		return fmt.Errorf("%w: --same-server %q: use %s, %s or %s", ErrUsage, b.SameServer, SameServerAuto, SameServerYes, SameServerNo)
	}
	if !(b.MaxRowsPerSecond >= 0) || math.IsInf(b.MaxRowsPerSecond, 0) {
		return fmt.Errorf("%w: --max-rows-per-second %v: use a number ≥ 0 (0 = no limit)", ErrUsage, b.MaxRowsPerSecond)
	}
	if !(b.MaxRedoFill >= 0 && b.MaxRedoFill < 1) {
		return fmt.Errorf("%w: --max-redo-fill %v: use a fraction below 1, such as %v (0 = off)", ErrUsage, b.MaxRedoFill, throttle.DefaultMaxRedoFill)
	}
	if b.MaxLatencyRise < 0 {
		return fmt.Errorf("%w: --max-latency-rise %s: use a duration such as %s (0 = off)", ErrUsage, b.MaxLatencyRise, throttle.DefaultMaxLatencyRise)
	}
	if b.MaxThreadsRunning < 0 || b.CriticalThreadsRunning < 0 {
		return fmt.Errorf("%w: --max-threads-running and --critical-threads-running must not be negative (0 = off)", ErrUsage)
	}
	if b.CriticalThreadsRunning > 0 && b.MaxThreadsRunning > b.CriticalThreadsRunning {
		return fmt.Errorf("%w: --max-threads-running %d is above --critical-threads-running %d", ErrUsage, b.MaxThreadsRunning, b.CriticalThreadsRunning)
	}
	if b.Replica.DSN != "" {
		b.Replica.Role = "replica"
		if _, err := b.Replica.Config(); err != nil {
			return err
		}
	} else if err := withoutDSN(b.Replica, "replica"); err != nil {
		return err
	}
	if err := positive(flagDuration{"--chunk-time", b.ChunkTime}, flagDuration{"--max-replica-lag", b.MaxReplicaLag},
		flagDuration{"--progress-every", b.ProgressEvery}); err != nil {
		return err
	}
	if b.ChunkDeadline < 0 || (b.ChunkDeadline > 0 && b.ChunkDeadline < b.ChunkTime) {
		return fmt.Errorf("%w: --chunk-deadline %s: use at least --chunk-time %s (0 = 4 × --chunk-time, at least 2s)",
			ErrUsage, b.ChunkDeadline, b.ChunkTime)
	}
	if !r.BackfillOnly { // the stream's flags (`backfill` has none)
		if err := r.validateStream(); err != nil {
			return err
		}
	}
	if r.AdminTokenFile != "" {
		tok, err := secretfile.Read("--admin-token-file", r.AdminTokenFile)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		r.adminToken = tok
	}
	return nil
}

func (r *Run) validateStream() error {
	st := &r.Stream
	if err := positive(flagDuration{"--batch-delay", st.BatchDelay}, flagDuration{"--heartbeat", st.Heartbeat},
		flagDuration{"--ready-max-lag", r.ReadyMaxLag}); err != nil {
		return err
	}
	if st.BatchRows < 1 {
		return fmt.Errorf("%w: --batch-rows %d: use 1 or more", ErrUsage, st.BatchRows)
	}
	if st.ApplyLanes < 1 || st.ApplyLanes > replication.MaxApplyLanes {
		return fmt.Errorf("%w: --apply-lanes %d: use 1 to %d", ErrUsage, st.ApplyLanes, replication.MaxApplyLanes)
	}
	if st.AcceptDDL != "" {
		g, ok := parseDDLName(st.AcceptDDL)
		if !ok {
			return fmt.Errorf("%w: --accept-ddl %q is not one GTID or binlog position: give the transaction the stream stopped at as its message names it, e.g. 0-1-1234 (MariaDB), 3e11fa47-71ca-11e1-9e33-c80aa9429562:23 (MySQL) or file:binlog.000003:1234 (file/position mode)", ErrUsage, st.AcceptDDL)
		}
		st.AcceptDDL = g
	}
	if st.AcceptIncident != "" {
		p, err := gtid.ParseFilePos(st.AcceptIncident)
		if err != nil || !gtid.IsFilePos(st.AcceptIncident) {
			return fmt.Errorf("%w: --accept-incident %q is not a binlog position: give the one the stream's stop names, e.g. file:binlog.000003:1234", ErrUsage, st.AcceptIncident)
		}
		p.Created = 0 // the stream names events without their file's creation time
		st.AcceptIncident = p.String()
	}
	if r.ServerID == 0 {
		return fmt.Errorf("%w: --server-id must not be 0", ErrUsage)
	}
	return nil
}

var (
	mariadbGTIDRE = regexp.MustCompile(`^[0-9]+-[0-9]+-[0-9]+$`)
	mysqlGTIDRE   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(:[a-z_][a-z0-9_]{0,31})?:[1-9][0-9]*$`)
)

// parseDDLName checks that s names one transaction the way the stream's DDL stop names it: a GTID
// (parseOneGTID), or in file/position mode the binlog position the transaction starts at, with or without the
// "file:" prefix. It returns the stream's spelling.
func parseDDLName(s string) (string, bool) {
	if g, ok := parseOneGTID(s); ok {
		return g, true
	}
	p, err := gtid.ParseFilePos(s)
	p.Created = 0 // the stream names events without their file's creation time (status shows it)
	return p.String(), err == nil
}

// parseOneGTID checks that s is a single transaction's GTID, as the stream names it, in either flavor, and
// returns it in the stream's spelling (MySQL's uuid and tag in lower case).
func parseOneGTID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if mariadbGTIDRE.MatchString(s) {
		_, err := gtid.Parse("mariadb", s)
		return s, err == nil
	}
	s = strings.ToLower(s)
	return s, mysqlGTIDRE.MatchString(s)
}

// Run executes the migration until ctx ends (daemon) or the backfill is done (BackfillOnly).
func (r *Run) Run(ctx context.Context) (int, error) {
	log := r.Log
	// The listener comes first: a busy --metrics-addr is reported before the servers are touched.
	ln, err := listenHTTP(r.MetricsAddr)
	if err != nil {
		return ExitError, err
	}
	served := false
	defer func() {
		if ln != nil && !served {
			ln.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	workers := r.Backfill.Workers
	if workers == 0 {
		workers = backfill.DefaultWorkers
	}
	k, err := r.open(ctx, log, 2*workers+5+max(r.Stream.ApplyLanes, 1))
	if err != nil {
		return ExitError, err
	}
	defer k.Close()
	// The replica is opened with the source and the target: a refused login fails the command before the
	// migration lock or the checkpoint is touched. A replica the daemon cannot reach (being rebuilt, a network
	// fault) does not keep the stream from starting: the throttle opens it when it next asks for its lag, and
	// until then the backfill retries, holding no rows, as it rides out a source or target outage.
	var replica *sql.DB
	var openReplica func(context.Context) (*sql.DB, error)
	if r.Backfill.Replica.DSN != "" {
		var lazy *sql.DB
		open := func(ctx context.Context) (*sql.DB, error) {
			db, _, err := dbconn.Open(ctx, r.Backfill.Replica, dbconn.Options{DialTimeout: r.ConnectTimeout, MaxOpenConns: 2, Log: log})
			lazy = db
			return db, err
		}
		switch replica, err = open(ctx); {
		case err == nil:
			defer replica.Close()
		case !r.BackfillOnly && dbconn.IsTransient(err):
			log.Warn("the replica cannot be reached: the stream starts, and the backfill retries until the replica answers",
				"err", err)
			replica, openReplica = nil, open
			defer func() {
				if lazy != nil {
					lazy.Close()
				}
			}()
		default:
			return ExitError, err
		}
	}
	sameServer, err := r.sameServer(ctx, k)
	if err != nil {
		return ExitError, err
	}
	lock, err := takeLock(ctx, k.dst, r.TargetTable.String())
	if err != nil {
		return ExitError, err
	}
	defer lock.release()
	p, err := prepare(ctx, log, &r.Common, k, r.Backfill.StartID, r.AdoptExistingRows)
	if err != nil {
		if startStreamStop(err) { // the stream cannot go on from this checkpoint, whoever asks
			store := checkpoint.New(k.dst, r.TargetTable.Schema)
			store.SetFence(lock)
			recordStreamStop(ctx, store, log, err)
		}
		return ExitError, err
	}
	p.store.SetFence(lock)
	var thr backfill.Throttler
	var guard func(context.Context) // the latency guard's probes, beside the copy
	if r.Backfill.MaxRedoFill > 0 {
		logRedo(ctx, log, k.dst, r.Backfill.MaxRedoFill)
	}
	latencyRise := r.Backfill.MaxLatencyRise
	if latencyRise > 0 && !logLatency(ctx, log, p.store, latencyRise) {
		latencyRise = 0
	}
	if r.Backfill.MaxThreadsRunning > 0 || r.Backfill.CriticalThreadsRunning > 0 || replica != nil || openReplica != nil || r.Backfill.MaxRedoFill > 0 || latencyRise > 0 {
		t, err := throttle.New(k.src, replica, throttle.Config{MaxThreadsRunning: r.Backfill.MaxThreadsRunning,
			CriticalThreadsRunning: r.Backfill.CriticalThreadsRunning, MaxReplicaLag: r.Backfill.MaxReplicaLag, OpenReplica: openReplica,
			Target: k.dst, MaxRedoFill: r.Backfill.MaxRedoFill, OnRedo: func(x throttle.Redo) { m.TargetRedoFill.Set(x.Fill()) },
			OnTrickle: m.RedoTrickled.Inc,
			Probe:     p.store.Probe, MaxLatencyRise: latencyRise, OnLatency: latencyReport(log, m)})
		if err != nil {
			return ExitError, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		thr, guard = t, t.Run
	}
	attempts := -1 // the daemon rides out source and target outages of any length, like its stream
	if r.BackfillOnly {
		attempts = 0 // the one-shot command gives up after its default number of attempts
	}
	bf, err := backfill.New(k.src, k.dst, p.store, m, log, backfill.Config{
		SourceTable: r.SourceTable, TargetTable: r.TargetTable, StartID: r.Backfill.StartID, EndID: r.Backfill.EndID,
		IDBoundary: p.state.IDBoundary, Workers: r.Backfill.Workers, ChunkBytes: r.Backfill.ChunkBytes, WriteMethod: r.Backfill.WriteMethod,
		ChunkTime: r.Backfill.ChunkTime, ChunkDeadline: r.Backfill.ChunkDeadline, MaxRowsPerSecond: r.Backfill.MaxRowsPerSecond, Throttle: thr, Hooks: r.BackfillHooks,
		MaxAttempts: attempts, SameServer: sameServer})
	if err != nil {
		return ExitError, err
	}
	var rep *replication.Replicator
	if !r.BackfillOnly {
		// The verification ledger learns which chunks replication changes, so `verify --incremental` re-checks them.
		if err := verify.EnsureLedger(ctx, k.dst, r.TargetTable.Schema); err != nil {
			return ExitError, err
		}
		schema := r.TargetTable.Schema
		touched := func(ctx context.Context, tx checkpoint.Execer, ids []uint64) error {
			return verify.MarkTouched(ctx, tx, schema, ids)
		}
		rep, err = replication.New(k.src, k.dst, p.store, m, log, replication.Config{Source: k.srcCfg, ServerID: r.ServerID,
			Flavor: p.flavor, SourceTable: r.SourceTable, TargetTable: r.TargetTable, FoldNames: p.info.FoldsNames(), ZeroLogPos: zeroLogPos(p.info), BatchRows: r.Stream.BatchRows, ApplyLanes: r.Stream.ApplyLanes,
			BatchDelay: r.Stream.BatchDelay, Heartbeat: r.Stream.Heartbeat, IDBoundary: p.state.IDBoundary, AcceptDDL: r.Stream.AcceptDDL, AcceptIncident: r.Stream.AcceptIncident,
			Unproven:    func(ctx context.Context) error { return verify.ForgetProofs(ctx, k.dst, schema) },
			LastEventAt: p.state.LastEventAt, Touched: touched, Hooks: r.StreamHooks,
			CheckSource: func(ctx context.Context) error {
				return checkSourceAgain(ctx, r.Source, r.ConnectTimeout, p.state, p.mode)
			}})
		if err != nil {
			return ExitError, err
		}
	}
	reporter := backfill.NewReporter(r.Out, r.TTY, log, r.Backfill.ProgressEvery)
	stage := newBackfillStage(bf, p.store, m, log, func(ctx context.Context) {
		var wg sync.WaitGroup
		if guard != nil {
			wg.Go(func() { guard(ctx) })
		}
		reporter.Run(ctx, bf.Progress)
		wg.Wait()
	}, r.BackfillOnly)
	probe := &probe{bf: bf, stage: stage, rep: rep, maxLag: r.ReadyMaxLag}
	stopHTTP := serveHTTP(ctx, log, ln, r.adminToken, defaultHTTPTimeouts, reg, probe)
	served = true

	// Losing the migration lock to another process stops this one.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	holdCtx, stopHold := context.WithCancel(ctx)
	lockLost := make(chan error, 1)
	go func() {
		if err := lock.hold(holdCtx, log); err != nil {
			lockLost <- err
			stopRun()
		}
		close(lockLost)
	}()
	// The target's AUTO_INCREMENT falling below the id boundary, or the source turning on binlog compression
	// while the stream runs (both checked at start by prepare), stops the run too, recorded as the stream's stop.
	watchCtx, stopWatch := context.WithCancel(runCtx)
	aiStop := make(chan error, 1)
	var streamSrc *sql.DB // the source, while there is a stream
	if rep != nil {
		streamSrc = k.src
	}
	go func() {
		if err := watchSettings(watchCtx, log, p.store, r.TargetTable, streamSrc, settingsEvery); err != nil {
			aiStop <- err
			stopRun()
		}
		close(aiStop)
	}()
	// The stream's stop ends the run, backfill included (its chunk in flight commits whole or rolls back); the
	// backfill's own stop leaves the stream running (backfillStage). docs/design.md, "Stops".
	g, gctx := errgroup.WithContext(runCtx)
	var streamErr error
	if rep != nil {
		if err := p.store.ClearStageStop(ctx, checkpoint.StageStream); err != nil {
			log.Warn("stream stop record not cleared; status may show an old stop", "err", err)
		}
		g.Go(func() error {
			err := rep.Run(gctx, p.pos)
			if err != nil && gctx.Err() == nil {
				streamErr = err // its own stop, not the run's end
			}
			return err
		})
	}
	g.Go(func() error { return stage.run(gctx) })
	if rep != nil {
		g.Go(func() error { logStream(gctx, log, rep, 30*time.Second); return nil })
	}
	err = g.Wait()
	stopWatch()
	if aerr := <-aiStop; aerr != nil {
		err, streamErr = aerr, aerr
	}
	if streamErr != nil {
		recordStreamStop(ctx, p.store, log, streamErr)
	}
	stopHold()
	if lerr := <-lockLost; lerr != nil {
		err = lerr
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info("stopped on signal; checkpoint committed")
		err = nil
	}
	if herr := stopHTTP(); herr != nil {
		log.Warn("metrics listener shutdown", "err", herr)
	}
	if err != nil {
		return ExitError, err
	}
	return ExitOK, nil
}

// sameServer turns --same-server into backfill.Config.SameServer. "yes" is also proven here, before the
// checkpoint is touched (the backfill proves it again on every start): INSERT … SELECT on a server that is not
// the source's would copy the target's own table of that name, a stale copy perhaps, without an error.
func (r *Run) sameServer(ctx context.Context, k *conns) (*bool, error) {
	switch r.Backfill.SameServer {
	case SameServerNo:
		return new(false), nil
	case SameServerYes:
		same, err := dbconn.SameServer(ctx, k.src, k.dst)
		if err != nil && !errors.Is(err, dbconn.ErrUnproven) {
			return nil, err
		}
		if !same {
			why := "a named lock taken through the source connection is not seen through the target connection"
			if err != nil {
				why = err.Error()
			}
			return nil, fmt.Errorf("%w: --same-server yes, but source and target are different servers (%s): the same-server copy would read the target server's own %s; use --same-server auto",
				ErrUsage, why, r.SourceTable)
		}
		return new(true), nil
	}
	return nil, nil // auto: the backfill proves it
}

// settingsEvery is how often the daemon compares the target's AUTO_INCREMENT with the id boundary and reads
// the source's binlog_transaction_compression: two small reads.
const settingsEvery = 5 * time.Second

// watchSettings returns a stop once the target's AUTO_INCREMENT is below the id boundary
// (checkpoint.ErrAutoIncrement: a MySQL 5.7 target restarted, or an ALTER) or, with src, once the source
// compresses its binlog transactions (dbconn.ErrBinlogCompression), and nil when ctx ends. A failed read (a
// server restarting) is tried again at the next tick; the check after a restart is the one that matters.
func watchSettings(ctx context.Context, log *slog.Logger, store *checkpoint.Store, target table.Name, src *sql.DB, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, err := store.CheckAutoIncrement(cctx, target)
		var cerr error
		if src != nil {
			cerr = dbconn.CheckBinlogCompression(cctx, src)
		}
		cancel()
		for _, e := range []error{err, cerr} {
			switch {
			case errors.Is(e, checkpoint.ErrAutoIncrement), errors.Is(e, dbconn.ErrBinlogCompression):
				return e // Run's error: the command's last line
			case e != nil && ctx.Err() == nil:
				log.Debug("settings not read; trying again", "err", e)
			}
		}
	}
}

// logStream logs the stream's state periodically so a log reader sees the daemon is current.
func logStream(ctx context.Context, log *slog.Logger, rep *replication.Replicator, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			log.Info("stream", "connected", rep.Connected(), "lag", rep.Lag().Round(time.Millisecond), "gtid", rep.Position().String())
		}
	}
}

type probe struct {
	bf     *backfill.Backfill
	stage  *backfillStage
	rep    *replication.Replicator
	maxLag time.Duration
}

func (p *probe) Alive() (bool, string) {
	if p.rep != nil && !p.rep.Connected() {
		return false, "binlog stream not connected"
	}
	return true, "ok"
}

func (p *probe) Ready() (bool, string) {
	if st := p.stage.stopped(); st != nil {
		return false, fmt.Sprintf("backfill stopped (%s): %s; the stream goes on; POST /resume starts the backfill again once the cause is gone", st.Reason, st.Message)
	}
	if pr := p.bf.Progress(); !pr.Done {
		return false, fmt.Sprintf("backfill not done (%.1f%%)", 100*pr.Ratio())
	}
	if p.rep == nil {
		return true, "backfill done"
	}
	if !p.rep.Connected() {
		return false, "binlog stream not connected"
	}
	if lag := p.rep.Lag(); lag > p.maxLag {
		return false, fmt.Sprintf("replication lag %s above %s", lag.Round(time.Millisecond), p.maxLag)
	}
	return true, "ready: backfill done, stream caught up"
}

func (p *probe) Pause()         { p.bf.Pause() }
func (p *probe) Resume() string { return p.stage.Resume() }

func (p *probe) SetRate(rowsPerSecond float64) string {
	p.bf.SetRate(rowsPerSecond)
	if rowsPerSecond == 0 {
		return "backfill rate limit lifted"
	}
	return fmt.Sprintf("backfill rate limit set to %g rows/s", rowsPerSecond)
}

// logLatency creates the latency guard's table and times its probe once at the start, and says what it
// found. It reports false where the probe cannot run (the table's grant missing, as for a checkpoint from
// before the guard): the backfill then goes unpaced, and the operator learns why here.
func logLatency(ctx context.Context, log *slog.Logger, store *checkpoint.Store, rise time.Duration) bool {
	err := store.EnsureProbe(ctx)
	start := time.Now()
	if err == nil {
		err = store.Probe(ctx)
	}
	if err != nil {
		log.Warn("cannot time a commit on the target: the backfill is not paced by the target's commit latency (--max-latency-rise); grant the tool's user "+
			"SELECT, INSERT, UPDATE, DELETE, CREATE on "+checkpoint.ProbeTable+" (README, \"Grants\")", "err", err)
		return false
	}
	log.Info("the backfill paces itself so the target's commit latency stays within --max-latency-rise of its latency without the copy",
		"max_latency_rise", rise, "commit_latency", time.Since(start).Round(10*time.Microsecond))
	return true
}

// latencyReport turns the latency guard's judgements into the gauges, and logs a failing probe when it starts
// failing, with what failed, and when it works again.
func latencyReport(log *slog.Logger, m *metrics.Metrics) func(throttle.Latency) {
	failing := ""
	return func(x throttle.Latency) {
		if x.Err != nil {
			m.TargetLatencyRise.Set(math.NaN())
			m.BackfillPause.Set(0)
			if msg := x.Err.Error(); msg != failing {
				failing = msg
				log.Warn("the latency guard cannot time a commit on the target: the backfill goes unpaced until it can", "err", x.Err)
			}
			return
		}
		if failing != "" {
			failing = ""
			log.Info("the latency guard times the target's commits again")
		}
		m.TargetLatencyRise.Set(x.Rise.Seconds())
		m.BackfillPause.Set(x.Pause.Seconds())
	}
}

// logRedo says at the start whether the copy can watch the target's redo log, how full it is, and what sets
// the copy's speed once the log is near its limit: InnoDB's background flushing (docs/design.md, "The redo log").
func logRedo(ctx context.Context, log *slog.Logger, dst *sql.DB, maxFill float64) {
	f, err := throttle.ReadFlushing(ctx, dst)
	switch {
	case err != nil:
		log.Warn("cannot read the target's redo log use; the backfill waits on it when it can", "err", err)
		return
	case !f.Visible:
		log.Warn(throttle.RedoInvisible)
		return
	}
	if f.DirtyLWM < 0 {
		log.Warn("cannot read the target's flushing settings (innodb_io_capacity, innodb_max_dirty_pages_pct_lwm)")
	}
	log.Info("while the target's redo log is fuller than --max-redo-fill of what InnoDB allows before it stalls every writer, the backfill starts one chunk every 100 ms; there the target's page flushing sets the copy's speed",
		"max_redo_fill", maxFill, "redo_limit_mib", f.Redo.Limit>>20, "redo_fill", fmt.Sprintf("%.2f", f.Redo.Fill()), "via", f.Redo.Via,
		"innodb_io_capacity", f.IOCapacity, "innodb_io_capacity_max", f.IOCapacityMax, "innodb_max_dirty_pages_pct_lwm", f.DirtyLWM)
	switch {
	case f.NoBackgroundFlush() && maxFill < 0.875:
		log.Warn("with innodb_max_dirty_pages_pct_lwm=0 the target flushes no pages in the background until its redo log is 7/8 full, above --max-redo-fill: the copy may crawl for good; "+
			"SET GLOBAL innodb_max_dirty_pages_pct_lwm = 10 on the target, or raise --max-redo-fill", "max_redo_fill", maxFill)
	case f.NoBackgroundFlush():
		log.Warn("the target flushes no pages in the background until its redo log is 7/8 full (MariaDB's innodb_max_dirty_pages_pct_lwm=0): " +
			"for a faster copy, SET GLOBAL innodb_max_dirty_pages_pct_lwm = 10 and innodb_io_capacity to what the disk sustains (docs/runbook.md, \"Target flushing\")")
	}
}
