package replication

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/metrics"
	"github.com/csmh-sync/csmh-sync/table"
)

// Definitive stops. Each is returned wrapped in a message that says what the operator should do; Run
// commits everything before the offending transaction first.
var (
	// ErrPurged: the source no longer has binlogs the position needs.
	ErrPurged = errors.New("binlog purged")
	// ErrDDL: DDL changed (or removed) the source table.
	ErrDDL = errors.New("source table changed by DDL")
	// ErrIDCollision: the source wrote an id at or above the boundary where the app writes into the target.
	ErrIDCollision = errors.New("id collision with app-written rows")
	// ErrSchema: binlog rows do not fit the table definitions the stream started with.
	ErrSchema = errors.New("binlog rows do not match the table definition")
	// ErrDiverged: the position holds transactions the source never executed (another server, or a source
	// restored from a backup).
	ErrDiverged = errors.New("position not on the source")
	// ErrUnsupported: the binlog holds a change to the source table that cannot be replayed exactly
	// (a statement-format write, an XA transaction).
	ErrUnsupported = errors.New("unsupported change to the source table")
	// ErrBinlogRead: the source refused to send its binlog from a position it holds (error 1236 for another
	// reason than a purged binlog or a position it never wrote): a damaged binlog, most often.
	ErrBinlogRead = errors.New("source cannot send its binlog")
	// ErrServerIDInUse: another replica or binlog reader connected to the source with the stream's server id,
	// and the source dropped the stream for it (error 1236). Connecting again would drop the other one in turn.
	ErrServerIDInUse = errors.New("server id in use by another replica")
	// ErrIncident: the source wrote an incident event (LOST_EVENTS) into its binlog: changes it made around
	// there may be missing from the binlog, so a stream past it may leave the target behind for good.
	ErrIncident = errors.New("incident in the source's binlog")
	// ErrTaggedGTID: a tagged GTID (uuid:tag:n, MySQL 8.3+) where the stream follows GTIDs; wrapped with
	// ErrUnsupported.
	ErrTaggedGTID = errors.New("tagged GTID")
)

// PositionStore is what the stream needs from the checkpoint: saving the position inside the transaction
// that applied the rows. *checkpoint.Store implements it.
type PositionStore interface {
	Epoch() uint64
	StreamGTID(ctx context.Context) (string, error)
	SaveStream(ctx context.Context, tx checkpoint.Execer, epoch uint64, p checkpoint.StreamProgress) error
	SaveLane(ctx context.Context, tx checkpoint.Execer, epoch uint64, l checkpoint.Lane) error
	Lanes(ctx context.Context) ([]checkpoint.Lane, error)
	IDBoundary(ctx context.Context) (uint64, error)
}

var _ PositionStore = (*checkpoint.Store)(nil)

// Hooks are named fault-injection points; nil in production.
type Hooks struct {
	// AfterBatchApplied runs after a target transaction committed, with the position it saved.
	AfterBatchApplied func(pos string)
	// BeforePositionCommit runs after the other apply lanes of a batch committed and before lane 0 (rows and
	// position) commits; an error it returns fails lane 0 as a crash there would.
	BeforePositionCommit func(lanes int) error
	// AfterPositionCommit runs after the transaction saving the position committed; an error it returns is
	// reported as if the commit's acknowledgement had been lost.
	AfterPositionCommit func() error
	// BeforeLaneApply runs in a lane's goroutine before the lane applies its share of a split batch, and
	// LaneApplied after it applied it (before it commits): tests order lanes with them.
	BeforeLaneApply, LaneApplied func(lane int)
	// FragmentApplied runs after a part of a large source transaction was written into its open target
	// transaction, with the part's row data size; an error it returns fails that transaction.
	FragmentApplied func(gtid string, bytes int) error
}

// Config tunes the stream.
type Config struct {
	Source      *mysql.Config // the source's connection settings; the binlog connection uses its address and credentials
	ServerID    uint32        // binlog client server id; must differ from every server's id
	Flavor      string        // "mariadb" or "mysql"
	SourceTable table.Name
	TargetTable table.Name
	// FoldNames: the source compares database and table names case-insensitively (lower_case_table_names 1
	// or 2, dbconn.ServerInfo.FoldsNames), so its binlog may name the source table in another case than
	// SourceTable: in lower case (1), as created (2), as a statement wrote it (any DDL). False compares exactly.
	FoldNames bool
	// ZeroLogPos: the source writes the events inside a transaction with end_log_pos 0 (MariaDB 11.4 and
	// later). In file mode go-mysql then fills their positions in from the events' sizes (FillZeroLogPos,
	// which also has the server send the Annotate_rows events the sizes need).
	ZeroLogPos bool
	BatchRows  int           // max row changes per target transaction (default 2000)
	BatchDelay time.Duration // how long a batch with rows waits for more (default 50 ms)
	// ApplyLanes is how many target transactions (and connections) one batch is applied over, dealing ids
	// to lanes in blocks; 1 applies each batch in a single transaction. See lanes.go. Default 2.
	ApplyLanes int
	Heartbeat  time.Duration // binlog heartbeat period (default 1 s)
	IDBoundary uint64        // source ids must stay below it; 0 = no guard
	// AcceptDDL names one DDL transaction on the source table that the operator has reviewed and adapted the
	// target to, as ErrDDL names it: its GTID, or in file mode the binlog position it starts at
	// (gtid.FilePos.String, "file:binlog.000003:1234"). The stream applies past it instead of stopping
	// again, when it is the first transaction after the checkpoint, after calling Unproven. Empty in normal
	// operation.
	AcceptDDL string
	// AcceptIncident names one incident event the operator has chosen to stream past, as ErrIncident names
	// it: the binlog position it starts at (gtid.FilePos.String), in either mode. Passing it calls Unproven
	// first. Empty in normal operation.
	AcceptIncident string
	// Unproven, if set, is called before the stream goes past an accepted incident or DDL: the changes the
	// source lost from its binlog, or made by DDL without row events (TRUNCATE, EXCHANGE PARTITION, a lossy
	// MODIFY), may be anywhere in the table, so the verification ledger's proofs must go and every chunk be
	// compared again.
	Unproven func(ctx context.Context) error
	// LastEventAt is the checkpoint's source commit time of the last applied transaction. It seeds the binlog
	// retention headroom after a restart, before this process has applied anything itself.
	LastEventAt time.Time
	// Touched, if set, is called inside each batch's target transaction with the ids the batch changed, so a
	// verification ledger can tell which chunks replication has touched since they were verified.
	Touched func(ctx context.Context, tx checkpoint.Execer, ids []uint64) error
	// FragmentBytes: a source transaction whose row data outgrows it reaches the target in parts of about
	// this size, inside one target transaction (default 16 MiB). It bounds memory, not atomicity.
	FragmentBytes int
	// CheckSource, if set, is called before every session streams from a file position (the first and each
	// reconnection): a file position means something only on the server that wrote it, and a name behind a VIP
	// or DNS may lead to another one after a failover. It returns an error wrapping ErrDiverged when the source
	// is not the server the checkpoint's position belongs to.
	CheckSource func(ctx context.Context) error
	// FlushTimeout bounds one target transaction of the stream, its COMMIT included (default 30 s). A flush
	// runs to completion even when the run is being stopped, so a stop commits the batch in hand instead of
	// throwing it away; a target that hangs holds the stop up for no longer than this.
	FlushTimeout time.Duration
	Hooks        Hooks
}

// Replicator streams the source's binlog and applies the source table's changes to the target.
// Lifecycle: New, then one Run at a time; Position, WaitFor, Connected and Lag may be called concurrently.
type Replicator struct {
	src, dst *sql.DB
	store    PositionStore
	m        *metrics.Metrics
	log      *slog.Logger
	baseLog  *slog.Logger
	cfg      Config

	unproven atomic.Bool // Config.Unproven has run for an accepted incident or DDL: once per process is enough

	// abort ends the stream session under way with a definitive error (the probe's: the source went behind
	// the stream); behind counts the probe's successive sightings of that.
	abortMu sync.Mutex
	abort   context.CancelCauseFunc
	behind  int

	mu         sync.Mutex
	pos        *gtid.Set // last committed position
	advancedAt time.Time // when pos last advanced
	lastEvent  time.Time // source commit time of the last committed transaction
	pending    []pendingTxn
	changed    chan struct{} // closed and replaced whenever pos advances

	seq         atomic.Uint64 // numbers received transactions
	connected   atomic.Bool
	lastContact atomic.Int64  // unix nanos of the last event or heartbeat
	boundary    atomic.Uint64 // the id boundary in force: Config.IDBoundary, or higher once cutover raised it
}

// pendingTxn is a received transaction not yet committed to the target.
type pendingTxn struct {
	seq     uint64
	lagFrom time.Time // the source commit, as closely as the binlog tells it (see lagFrom)
}

// New validates the configuration and fills defaults.
func New(srcDB, dstDB *sql.DB, store *checkpoint.Store, m *metrics.Metrics, log *slog.Logger, cfg Config) (*Replicator, error) {
	switch {
	case srcDB == nil || dstDB == nil || store == nil || m == nil || log == nil:
		return nil, errors.New("replication: source, target, checkpoint store, metrics and logger are required")
	case cfg.Source == nil || cfg.Source.Addr == "":
		return nil, errors.New("replication: the source's connection config (address, user) is required")
	case cfg.ServerID == 0:
		return nil, errors.New("replication: server id must not be 0 (and must differ from every server's id)")
	case cfg.Flavor != "mysql" && cfg.Flavor != "mariadb":
		return nil, fmt.Errorf("replication: flavor %q: want mysql or mariadb", cfg.Flavor)
	case cfg.SourceTable.Table == "" || cfg.TargetTable.Table == "":
		return nil, errors.New("replication: source and target tables are required")
	case cfg.BatchRows < 0 || cfg.BatchDelay < 0 || cfg.Heartbeat < 0:
		return nil, errors.New("replication: batch rows, batch delay and heartbeat must not be negative")
	case cfg.ApplyLanes < 0 || cfg.ApplyLanes > MaxApplyLanes:
		return nil, fmt.Errorf("replication: apply lanes %d: want 1 to %d", cfg.ApplyLanes, MaxApplyLanes)
	}
	if cfg.ApplyLanes == 0 {
		cfg.ApplyLanes = DefaultApplyLanes
	}
	if cfg.BatchRows == 0 {
		cfg.BatchRows = 2000
	}
	if cfg.BatchDelay == 0 {
		cfg.BatchDelay = 50 * time.Millisecond
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = flushTimeout
	}
	if cfg.FragmentBytes <= 0 {
		cfg.FragmentBytes = fragmentBytes
	}
	r := &Replicator{src: srcDB, dst: dstDB, store: store, m: m, log: log.With("component", "replication"), baseLog: log,
		cfg: cfg, changed: make(chan struct{})}
	r.boundary.Store(cfg.IDBoundary)
	return r, nil
}

// Run streams from start until ctx ends — then it returns nil, after committing the batch in hand — or a
// definitive error. Lost connections and transient target errors reconnect with backoff
// (100 ms doubling to 10 s, jittered) from the last committed position.
func (r *Replicator) Run(ctx context.Context, start *gtid.Set) error {
	if start == nil || start.Flavor() != r.cfg.Flavor {
		return fmt.Errorf("replication: start position must be a %s GTID set", r.cfg.Flavor)
	}
	r.mu.Lock()
	r.pos, r.advancedAt = start.Clone(), time.Now()
	if r.lastEvent.IsZero() {
		r.lastEvent = r.cfg.LastEventAt
	}
	r.mu.Unlock()

	probeCtx, stopProbes := context.WithCancel(ctx)
	var probes sync.WaitGroup
	probes.Go(func() { r.probe(probeCtx) })
	defer func() { stopProbes(); probes.Wait() }()

	delay := 100 * time.Millisecond
	for {
		began, from := time.Now(), r.Position()
		sctx, abort := context.WithCancelCause(ctx)
		r.abortMu.Lock()
		r.abort = abort
		r.abortMu.Unlock()
		err := r.session(sctx)
		abort(nil)
		r.setConnected(false)
		r.dropPending()
		if cause := context.Cause(sctx); ctx.Err() == nil && errors.Is(cause, ErrDiverged) {
			return cause
		}
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			return nil
		}
		if errors.Is(err, ErrIDCollision) && r.boundaryRaised(ctx) {
			continue // the transaction is streamed again, checked against the new boundary
		}
		if !retryable(err) {
			return err
		}
		// A session that ran a while or made progress proves the servers healthy: start backing off anew.
		if time.Since(began) > time.Minute || r.Position().String() != from.String() {
			delay = 100 * time.Millisecond
		}
		wait := delay/2 + rand.N(delay)
		r.log.Warn("stream interrupted; reconnecting from the last committed position", "err", err,
			"in", wait.Round(time.Millisecond), "from", r.Position().String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// boundaryRaised reports whether the checkpoint's id boundary is now above the one in force (cutover
// --bump-auto-increment raises it when the app has written no row in between), and adopts it.
func (r *Replicator) boundaryRaised(ctx context.Context) bool {
	b, err := r.store.IDBoundary(ctx)
	old := r.boundary.Load()
	if err != nil || b <= old {
		return false
	}
	r.boundary.Store(b)
	r.log.Info("id boundary raised in the checkpoint; streaming on", "from", old, "to", b)
	return true
}

// retryable reports whether Run should reconnect after err rather than return it.
func retryable(err error) bool {
	if err == nil {
		return true // the stream ended without a reason, e.g. the server closed it: reconnect
	}
	for _, s := range []error{ErrPurged, ErrDDL, ErrIDCollision, ErrSchema, ErrDiverged, ErrUnsupported, ErrBinlogRead, ErrServerIDInUse, ErrIncident, checkpoint.ErrNone, checkpoint.ErrMismatch} {
		if errors.Is(err, s) {
			return false
		}
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return dbconn.IsTransient(err)
	}
	var ge *gomysql.MyError
	if errors.As(err, &ge) {
		return dbconn.IsTransient(&mysql.MySQLError{Number: ge.Code, Message: ge.Message})
	}
	// Anything without a server error code is the network or a server going away: worth another try.
	return true
}

// classify maps errors of the binlog connection. Error 1236 (the server cannot send the binlog from the
// requested position) becomes, by the server's message: ErrPurged with the start-over remedy when the binlog
// the position needs is gone; ErrDiverged when the source says the position is not in its binlog; and
// ErrBinlogRead, with the server's words, for anything else (a damaged binlog, an event larger than its
// max_allowed_packet): starting over is not the answer to those. Everything else is returned as it is.
func (r *Replicator) classify(err error) error {
	if err == nil {
		return nil
	}
	var msg string
	var ge *gomysql.MyError
	code := 1236
	switch {
	case errors.As(err, &ge) && (ge.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG || ge.Code == errSlaveSameID):
		msg, code = ge.Message, int(ge.Code)
	case strings.Contains(err.Error(), "ERROR 1236"):
		msg = err.Error()
	default:
		return err
	}
	refused := binlogRefusal(msg)
	if code == errSlaveSameID {
		refused = refusedServerID
	}
	switch refused {
	case refusedPurged:
		return fmt.Errorf("%w: the source has purged binlogs the checkpoint needs (error 1236: %s): %s", ErrPurged, msg, r.purgedRemedy())
	case refusedDiverged:
		return fmt.Errorf("%w: the source says the checkpoint's position is not in its binlog (error 1236: %s): is this the source the copy started from? point csmh-sync at it, or start over",
			ErrDiverged, msg)
	case refusedServerID:
		return fmt.Errorf("%w: the source dropped the binlog stream because another replica or binlog reader connected with its server id %d (error %d: %s): connecting again would drop that one in turn; restart with a --server-id no replica of the source uses (SHOW REPLICAS or SHOW SLAVE HOSTS lists theirs); the checkpoint is kept",
			ErrServerIDInUse, r.cfg.ServerID, code, msg)
	}
	return fmt.Errorf("%w (error 1236: %s): the checkpoint is kept; if the message names max_allowed_packet, raise the source's and restart; if mysqlbinlog cannot read that binlog either, it is damaged: start over (docs/runbook.md, \"Recover from a purged binlog\")",
		ErrBinlogRead, msg)
}

// errSlaveSameID is MariaDB's ER_SLAVE_SAME_ID: the source dropped this binlog connection for a newer one with
// the same server id (MySQL says so in a 1236).
const errSlaveSameID = 4052

// refusal is what a 1236's message says went wrong.
type refusal int

const (
	refusedOther refusal = iota
	refusedPurged
	refusedDiverged
	refusedServerID
)

// binlogRefusal reads the server's message of error 1236, in the words MySQL 5.7–8.4 and MariaDB 10.x use
// (both "master"/"slave" and "source"/"replica"; TestBinlogRefusalMessages holds them).
func binlogRefusal(msg string) refusal {
	m := strings.ToLower(msg)
	for _, s := range []string{"purged", "could not find first log file name", "could not find gtid state requested"} {
		if strings.Contains(m, s) {
			return refusedPurged
		}
	}
	for _, s := range []string{"which is not in the master's binlog", "which is not in the source's binlog",
		"is missing the gtid", "has more gtids than the", "position > file size", "diverged"} {
		if strings.Contains(m, s) {
			return refusedDiverged
		}
	}
	// MySQL: "A slave (replica) with the same server_uuid/server_id as this slave (replica) has connected to the
	// master (source)"; MariaDB: "A slave with the same server_uuid/server_id is already connected".
	if strings.Contains(m, "with the same server_uuid/server_id") {
		return refusedServerID
	}
	return refusedOther
}

// Position returns the last committed position (a copy), or nil before Run.
func (r *Replicator) Position() *gtid.Set {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos == nil {
		return nil
	}
	return r.pos.Clone()
}

// WaitFor blocks until the committed position contains target, or ctx ends.
func (r *Replicator) WaitFor(ctx context.Context, target *gtid.Set) error {
	for {
		r.mu.Lock()
		done := r.pos != nil && r.pos.Contains(target)
		changed := r.changed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for position %s (committed: %s): %w", target, r.Position(), ctx.Err())
		case <-changed:
		}
	}
}

// Connected reports whether the binlog stream is up.
func (r *Replicator) Connected() bool { return r.connected.Load() }

// Lag is the age of the oldest transaction received but not yet applied. It is 0 when nothing is pending
// and the source proved itself alive (an event or heartbeat) within two heartbeat periods; with nothing
// pending and no recent word from the source it is the time since the last one, a lower bound.
func (r *Replicator) Lag() time.Duration {
	r.mu.Lock()
	var oldest time.Time
	if len(r.pending) > 0 {
		oldest = r.pending[0].lagFrom
	}
	r.mu.Unlock()
	now := time.Now()
	if !oldest.IsZero() {
		return max(now.Sub(oldest), 0)
	}
	last := r.lastContact.Load()
	if last == 0 {
		return 0
	}
	if since := now.Sub(time.Unix(0, last)); since > 2*r.cfg.Heartbeat {
		return since
	}
	return 0
}

// received records a complete transaction handed to the applier; its lag counts from from.
func (r *Replicator) received(t *txn, from time.Time) {
	r.receiving(t.seq, from)
	r.m.SourceWrites.Inc()
}

// receiving records a change not yet applied, for the lag: a transaction, or the first part of a large one.
func (r *Replicator) receiving(seq uint64, from time.Time) {
	r.mu.Lock()
	r.pending = append(r.pending, pendingTxn{seq: seq, lagFrom: from})
	r.mu.Unlock()
}

// committed records a batch the target committed.
func (r *Replicator) committed(pos *gtid.Set, lastSeq uint64, lastTS time.Time) {
	r.mu.Lock()
	r.pos = pos.Clone()
	r.advancedAt = time.Now()
	if !lastTS.IsZero() {
		r.lastEvent = lastTS
	}
	i := 0
	for i < len(r.pending) && r.pending[i].seq <= lastSeq {
		i++
	}
	r.pending = append(r.pending[:0], r.pending[i:]...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	r.m.Lag.Set(r.Lag().Seconds())
	r.m.CheckpointAge.Set(0)
}

// adopt moves the position to a checkpoint found ahead of it (nothing is pending between sessions).
func (r *Replicator) adopt(pos *gtid.Set) {
	r.mu.Lock()
	r.pos, r.advancedAt = pos.Clone(), time.Now()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// dropPending forgets received transactions a stopped session did not commit; they will be read again.
func (r *Replicator) dropPending() {
	r.mu.Lock()
	r.pending = r.pending[:0]
	r.mu.Unlock()
}

func (r *Replicator) touch() { r.lastContact.Store(time.Now().UnixNano()) }

func (r *Replicator) setConnected(up bool) {
	if r.connected.Swap(up) == up {
		return
	}
	if up {
		r.m.Connected.Set(1)
		r.log.Info("binlog stream connected", "from", r.Position().String())
	} else {
		r.m.Connected.Set(0)
	}
}
