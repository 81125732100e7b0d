// Package throttle holds the backfill back while production needs the servers: it paces the copy by the
// target's commit latency, slows it while the target's redo log is near the point where InnoDB stops every
// writer, while the source's Threads_running is above a limit or a replica lags too far, and stops the copy
// at a critical load (the max-load / critical-load pair of pt-online-schema-change).
package throttle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/internal/clock"
)

// ErrCriticalLoad stops the copy: the source is overloaded.
var ErrCriticalLoad = errors.New("source load is critical")

// ErrConfig means the limits are invalid.
var ErrConfig = errors.New("throttle configuration")

// ErrReplica wraps every failure to read the replica's lag, so callers can tell a replica problem from others.
var ErrReplica = errors.New("cannot read the --replica-dsn server's lag")

// ErrNotReplica means the server given as the replica does not replicate.
var ErrNotReplica = errors.New("the --replica-dsn server is not a replica")

// Config sets the limits; zero disables a check.
type Config struct {
	MaxThreadsRunning      int64         // wait while the source's Threads_running is above
	CriticalThreadsRunning int64         // fail with ErrCriticalLoad when it is above
	MaxReplicaLag          time.Duration // wait while the replica lags more (default 10s when a replica is given)
	// OpenReplica, with no replica given to New, opens the replica when it is first asked for its lag, and again
	// at each later check until it succeeds (the daemon started while the replica could not be reached): each
	// failure is an ErrReplica.
	OpenReplica func(context.Context) (*sql.DB, error)
	Interval    time.Duration // poll interval while throttled; default 1s
	// Target is the server the copy writes to; with MaxRedoFill > 0 chunk starts trickle, one every redoTrickle
	// for all callers, while its redo log is fuller than that fraction of InnoDB's limit (Redo), polled as often
	// as a reading serves (redoFresh, 20 ms: the log fills in seconds).
	Target      *sql.DB
	MaxRedoFill float64
	OnRedo      func(Redo) // called with each reading of the target's redo log use; may be nil
	OnTrickle   func()     // called for each chunk start let through above MaxRedoFill; may be nil
	// Probe times one small commit on the target; with MaxLatencyRise > 0 each chunk start waits a pause that
	// grows while the probes run more than that above their latency without the copy (latencyGuard).
	Probe          func(context.Context) error
	MaxLatencyRise time.Duration
	OnLatency      func(Latency) // called with each judgement of the latency guard; may be nil
}

// Throttler implements backfill.Throttler. Wait may be called from several goroutines at once.
type Throttler struct {
	src     *sql.DB
	mu      sync.Mutex
	replica *sql.DB // nil until OpenReplica succeeds, when it is set
	// openErr and openAt are OpenReplica's last failure: the workers that ask within Interval of it share it
	// rather than each waiting for a dial of its own.
	openErr error
	openAt  time.Time
	cfg     Config
	redo    *redoWatch    // nil: not watched
	latency *latencyGuard // nil: not watched
}

// New validates the limits. replica may be nil.
func New(src, replica *sql.DB, cfg Config) (*Throttler, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	switch {
	case src == nil:
		return nil, fmt.Errorf("%w: a source connection is required", ErrConfig)
	case cfg.MaxThreadsRunning < 0 || cfg.CriticalThreadsRunning < 0 || cfg.MaxReplicaLag < 0:
		return nil, fmt.Errorf("%w: limits must not be negative", ErrConfig)
	case !(cfg.MaxRedoFill >= 0 && cfg.MaxRedoFill < 1):
		return nil, fmt.Errorf("%w: max redo fill %v: use a fraction from 0 (off) to below 1", ErrConfig, cfg.MaxRedoFill)
	case cfg.MaxLatencyRise < 0:
		return nil, fmt.Errorf("%w: max latency rise %s: use a duration from 0 (off) up", ErrConfig, cfg.MaxLatencyRise)
	case cfg.MaxLatencyRise > 0 && cfg.Probe == nil:
		return nil, fmt.Errorf("%w: a probe of the target is required to watch its latency", ErrConfig)
	case cfg.MaxRedoFill > 0 && cfg.Target == nil:
		return nil, fmt.Errorf("%w: a target connection is required to watch its redo log", ErrConfig)
	case cfg.CriticalThreadsRunning > 0 && cfg.MaxThreadsRunning > cfg.CriticalThreadsRunning:
		return nil, fmt.Errorf("%w: max threads running %d is above the critical %d", ErrConfig, cfg.MaxThreadsRunning, cfg.CriticalThreadsRunning)
	}
	if replica != nil && cfg.OpenReplica != nil {
		return nil, fmt.Errorf("%w: a replica and a way to open one are both given", ErrConfig)
	}
	if (replica != nil || cfg.OpenReplica != nil) && cfg.MaxReplicaLag <= 0 {
		cfg.MaxReplicaLag = 10 * time.Second
	}
	t := &Throttler{src: src, replica: replica, cfg: cfg}
	if cfg.MaxRedoFill > 0 {
		t.redo = &redoWatch{db: cfg.Target, onRead: cfg.OnRedo}
	}
	if cfg.MaxLatencyRise > 0 {
		t.latency = &latencyGuard{probe: cfg.Probe, limit: cfg.MaxLatencyRise, onRead: cfg.OnLatency}
	}
	return t, nil
}

// Run times the target's commits for the latency guard until ctx ends; without it (or without MaxLatencyRise)
// Wait never pauses for the latency. Call it once, beside the copy.
func (t *Throttler) Run(ctx context.Context) {
	if t.latency != nil {
		t.latency.run(ctx)
	}
}

// Wait returns once the load is acceptable, with the time spent waiting: after the latency guard's pause, then
// at once when the load is acceptable, after polling every Interval while it is not. It fails with
// ErrCriticalLoad, a status query's error, or ctx's error.
func (t *Throttler) Wait(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if t.latency != nil {
		if pause := t.latency.current(); pause > 0 {
			if err := clock.Sleep(ctx, pause); err != nil {
				return time.Since(start), err
			}
		}
	}
	for {
		poll, err := t.busy(ctx)
		if err != nil {
			return time.Since(start), err
		}
		if poll == 0 {
			return time.Since(start), nil
		}
		if err := clock.Sleep(ctx, poll); err != nil {
			return time.Since(start), err
		}
	}
}

// busy returns how long to wait before asking again, 0 when the copy may go on.
func (t *Throttler) busy(ctx context.Context) (time.Duration, error) {
	// The redo log is polled as often as a reading serves, the others every Interval. Above the limit the
	// source and the replica are asked only when the trickle's next slot is free, and the slot is taken last,
	// by a chunk that will start: one held back by the load or a replica leaves it to another.
	full := false
	if t.redo != nil {
		r, ok, err := t.redo.read(ctx)
		if err != nil {
			return 0, err
		}
		full = ok && r.Fill() > t.cfg.MaxRedoFill
		if full && !t.redo.due(time.Now()) {
			return redoFresh, nil
		}
	}
	if t.cfg.MaxThreadsRunning > 0 || t.cfg.CriticalThreadsRunning > 0 {
		n, err := dbconn.Status(ctx, t.src, "Threads_running")
		if err != nil {
			return 0, err
		}
		if t.cfg.CriticalThreadsRunning > 0 && n > t.cfg.CriticalThreadsRunning {
			return 0, fmt.Errorf("%w: Threads_running %d > --critical-threads-running %d: the copy stopped; start it again when the load is lower",
				ErrCriticalLoad, n, t.cfg.CriticalThreadsRunning)
		}
		if t.cfg.MaxThreadsRunning > 0 && n > t.cfg.MaxThreadsRunning {
			return t.cfg.Interval, nil
		}
	}
	replica, err := t.replicaDB(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrReplica, err)
	}
	if replica != nil {
		lag, err := ReplicaLag(ctx, replica)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrReplica, err)
		}
		if lag < 0 || lag > t.cfg.MaxReplicaLag {
			return t.cfg.Interval, nil
		}
	}
	if full {
		if !t.redo.trickle(time.Now()) {
			return redoFresh, nil
		}
		if t.cfg.OnTrickle != nil {
			t.cfg.OnTrickle()
		}
	}
	return 0, nil
}

// replicaDB is the replica to ask, opened now if it was not yet (Config.OpenReplica); nil: none.
func (t *Throttler) replicaDB(ctx context.Context) (*sql.DB, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.replica == nil && t.cfg.OpenReplica != nil {
		if t.openErr != nil && time.Since(t.openAt) < t.cfg.Interval {
			return nil, t.openErr
		}
		db, err := t.cfg.OpenReplica(ctx)
		if err != nil {
			t.openErr, t.openAt = err, time.Now()
			return nil, err
		}
		t.replica = db
	}
	return t.replica, nil
}

// ReplicaLag reads Seconds_Behind_Master (Seconds_Behind_Source on MySQL 8.0.22+); -1 when replication is
// stopped or broken. SHOW REPLICA STATUS is tried first (MariaDB 10.5+, MySQL 8.0.22+; MySQL 8.4 has nothing
// else), SHOW SLAVE STATUS on older servers.
func ReplicaLag(ctx context.Context, db *sql.DB) (time.Duration, error) {
	rows, err := db.QueryContext(ctx, "SHOW REPLICA STATUS")
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1064 { // syntax error: an older server
		rows, err = db.QueryContext(ctx, "SHOW SLAVE STATUS")
	}
	if err != nil {
		return 0, fmt.Errorf("read replica status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, fmt.Errorf("read replica status: %w", err)
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("read replica status: %w", err)
		}
		return 0, ErrNotReplica
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return 0, fmt.Errorf("read replica status: %w", err)
	}
	for i, c := range cols {
		if c == "Seconds_Behind_Master" || c == "Seconds_Behind_Source" {
			if !vals[i].Valid {
				return -1, nil
			}
			n, err := strconv.ParseInt(vals[i].String, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("replica status: %s = %q: %w", c, vals[i].String, err)
			}
			return time.Duration(n) * time.Second, nil
		}
	}
	return 0, errors.New("replica status has no Seconds_Behind_Master or Seconds_Behind_Source column")
}
