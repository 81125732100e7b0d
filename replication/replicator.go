// Package replication tails the source's binlog and applies the source table's inserts, updates and deletes to
// the target. Whole source transactions flow from the streamer to the applier; several are applied in ONE target
// transaction that also writes the new GTID position, so each is applied exactly once across crashes.
package replication

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
)

// Definitive stops. Each is wrapped with what the operator should do.
var (
	ErrPurged      = errors.New("binlog purged")
	ErrDDL         = errors.New("source table changed by DDL")
	ErrIDCollision = errors.New("id collision with app-written rows")
	ErrSchema      = errors.New("binlog rows do not match the table definition")
)

// Hooks are named fault-injection points; nil in production.
type Hooks struct {
	AfterBatchApplied func(pos string) // after a target transaction committed
}

// Config tunes the stream.
type Config struct {
	Source      *mysql.Config
	ServerID    uint32
	Flavor      string
	SourceTable table.Name
	TargetTable table.Name
	BatchRows   int           // row changes per target transaction (default 2000)
	BatchDelay  time.Duration // how long a batch waits for more (default 50 ms)
	Heartbeat   time.Duration // binlog heartbeat period (default 1 s)
	IDBoundary  uint64
	Hooks       Hooks
}

// Replicator streams and applies until stopped.
type Replicator struct {
	src, dst *sql.DB
	store    *checkpoint.Store
	m        *metrics.Metrics
	log      *slog.Logger
	cfg      Config

	mu        sync.Mutex
	pos       *gtid.Set // last committed position
	advanced  time.Time // when pos last advanced
	lastEvent time.Time // source commit time of the last applied transaction

	connected   atomic.Bool
	lagNanos    atomic.Int64
	lastContact atomic.Int64 // unix nanos of the last event or heartbeat
}

// New validates the configuration.
func New(src, dst *sql.DB, store *checkpoint.Store, m *metrics.Metrics, log *slog.Logger, cfg Config) (*Replicator, error) {
	if cfg.Source == nil {
		return nil, errors.New("replication: source connection config is required")
	}
	if cfg.ServerID == 0 {
		return nil, errors.New("replication: server id must not be 0")
	}
	if cfg.Flavor != "mysql" && cfg.Flavor != "mariadb" {
		return nil, fmt.Errorf("replication: flavor %q: want mysql or mariadb", cfg.Flavor)
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 2000
	}
	if cfg.BatchDelay <= 0 {
		cfg.BatchDelay = 50 * time.Millisecond
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	return &Replicator{src: src, dst: dst, store: store, m: m, log: log.With("component", "replication"), cfg: cfg}, nil
}

// Run streams from start until ctx ends (nil, after the current batch is committed) or a definitive error.
// Transient failures of either server reconnect with backoff from the last committed position.
func (r *Replicator) Run(ctx context.Context, start *gtid.Set) error {
	r.mu.Lock()
	r.pos, r.advanced = start.Clone(), time.Now()
	r.mu.Unlock()
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	go r.probe(probeCtx)
	delay := 100 * time.Millisecond
	for {
		began := time.Now()
		err := r.session(ctx, r.Position())
		r.connected.Store(false)
		r.m.Connected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil || !retryable(err) {
			return err
		}
		if time.Since(began) > time.Minute {
			delay = 100 * time.Millisecond
		}
		wait := delay + time.Duration(rand.Int64N(int64(delay)))
		r.log.Warn("stream interrupted; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

func retryable(err error) bool {
	if errors.Is(err, ErrPurged) || errors.Is(err, ErrDDL) || errors.Is(err, ErrIDCollision) || errors.Is(err, ErrSchema) {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && !dbconn.IsTransient(err) {
		return false
	}
	return true
}

// Position returns the last committed position.
func (r *Replicator) Position() *gtid.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos == nil {
		return nil
	}
	return r.pos.Clone()
}

// WaitFor blocks until the committed position contains target.
func (r *Replicator) WaitFor(ctx context.Context, target *gtid.Set) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if p := r.Position(); p != nil && p.Contains(target) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s (at %s): %w", target, r.Position(), ctx.Err())
		case <-t.C:
		}
	}
}

// Connected reports whether the binlog stream is up.
func (r *Replicator) Connected() bool { return r.connected.Load() }

// Lag is the age of the oldest change received but not applied; 0 when caught up.
func (r *Replicator) Lag() time.Duration { return time.Duration(r.lagNanos.Load()) }

func (r *Replicator) committed(pos *gtid.Set, lastEvent time.Time) {
	r.mu.Lock()
	r.pos = pos.Clone()
	r.advanced = time.Now()
	if !lastEvent.IsZero() {
		r.lastEvent = lastEvent
	}
	r.mu.Unlock()
}
