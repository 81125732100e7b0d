// Package preflight answers "can the migration run?" without writing anything: both servers reachable
// within a timeout, binlog and GTID settings, privileges, both tables present with columns that map by name
// without loss, and enough id space between the ids csmh-sync copies and the ids the app writes to CSMHE.
package preflight

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/throttle"
)

// Config is what preflight checks.
type Config struct {
	Source, Target           dbconn.Endpoint
	SourceTable, TargetTable table.Name
	OwnTables                []string // csmh-sync's own tables in the target table's schema (checkpoint, verify ledger)
	ProbeTable               string   // the latency guard's table there, an optional grant
	ServerID                 uint32   // the binlog client id csmh-sync will use
	// Position is how the stream will follow the source, as run's --position: "auto" (or ""), "gtid" or
	// "file". The GTID findings and the source's grants are those of that mode.
	Position string
	Timeout  time.Duration // per connection attempt; default 5s
}

// Level of a finding.
type Level string

// Levels, in increasing severity.
const (
	OK   Level = "ok"
	Warn Level = "warn"
	Fail Level = "FAIL"
)

// Finding is one line of the report.
type Finding struct {
	Level Level  `json:"level"`
	Check string `json:"check"`
	Msg   string `json:"message"`
}

// Report is the outcome of all checks.
type Report struct {
	Findings []Finding `json:"findings"`
	// RunwayIDs is how many ids the source can still allocate before reaching the first app-written id in the
	// target; RunwayHours the same at the source's recent write rate (0 if unknown).
	RunwayIDs   int64   `json:"runway_ids"`
	RunwayHours float64 `json:"runway_hours"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, f := range r.Findings {
		if f.Level == Fail {
			return true
		}
	}
	return false
}

// Print writes one line per finding.
func (r *Report) Print(w io.Writer) {
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%-4s  %-12s %s\n", f.Level, f.Check, f.Msg)
	}
}

func (r *Report) add(l Level, check, format string, a ...any) {
	r.Findings = append(r.Findings, Finding{Level: l, Check: check, Msg: fmt.Sprintf(format, a...)})
}

// Checker runs the checks.
type Checker struct {
	cfg Config
	log *slog.Logger
}

// New validates the configuration.
func New(log *slog.Logger, cfg Config) (*Checker, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.SourceTable.Table == "" || cfg.TargetTable.Table == "" {
		return nil, errors.New("preflight: source and target tables are required")
	}
	return &Checker{cfg: cfg, log: log}, nil
}

// Run performs every check it can; a failed connection skips the checks that need it. The error is only for
// the checker's own failures: findings carry the verdict.
func (c *Checker) Run(ctx context.Context) *Report {
	r := &Report{}
	src := c.open(ctx, r, c.cfg.Source)
	dst := c.open(ctx, r, c.cfg.Target)
	if src != nil {
		defer src.Close()
	}
	if dst != nil {
		defer dst.Close()
	}
	var srcInfo dbconn.ServerInfo
	if src != nil {
		srcInfo = c.checkSourceServer(ctx, r, src)
		c.checkSourceGrants(ctx, r, src, srcInfo)
	}
	if dst != nil {
		var dstVersion dbconn.Version
		if di, err := dbconn.Inspect(ctx, dst); err == nil {
			dstVersion = di.Version
		}
		// On one server the backfill copies with INSERT … SELECT if the target's user may read the source table.
		same := false
		if src != nil {
			same, _ = dbconn.SameServer(ctx, src, dst)
		}
		c.checkTargetGrants(ctx, r, dst, srcInfo.Version, dstVersion, same)
		c.checkAutoIncLockMode(ctx, r, dst)
		checkRedo(ctx, r, dst)
	}
	var st, tt *table.Table
	if src != nil {
		st = c.loadTable(ctx, r, src, "source", c.cfg.SourceTable, "--source-table")
	}
	if dst != nil {
		tt = c.loadTable(ctx, r, dst, "target", c.cfg.TargetTable, "--target-table")
	}
	if st != nil && tt != nil {
		c.checkColumns(r, st, tt)
		c.checkIDSpace(ctx, r, src, dst, st, tt)
	}
	if tt != nil {
		c.checkBoundary(ctx, r, dst)
	}
	return r
}

// checkBoundary compares, once a migration has started, the target's AUTO_INCREMENT with the checkpoint's id
// boundary: below it (a MySQL 5.7 target restarted) the app's next rows would land in the copied range, and
// run and backfill refuse to start.
func (c *Checker) checkBoundary(ctx context.Context, r *Report, dst *sql.DB) {
	ai, boundary, err := checkpoint.New(dst, c.cfg.TargetTable.Schema).CheckAutoIncrement(ctx, c.cfg.TargetTable)
	switch {
	case errors.Is(err, checkpoint.ErrNone): // no migration yet: checkIDSpace covers a first start
	case errors.Is(err, checkpoint.ErrAutoIncrement):
		r.add(Fail, "id-boundary", "%v", err)
	case err != nil:
		r.add(Warn, "id-boundary", "cannot compare the target AUTO_INCREMENT with the checkpoint's id boundary: %v", err)
	case ai == 0:
		r.add(Warn, "id-boundary", "the target reports no AUTO_INCREMENT for %s: its next app id cannot be compared with the id boundary %d", c.cfg.TargetTable, boundary)
	default:
		r.add(OK, "id-boundary", "target AUTO_INCREMENT %d is at or above the checkpoint's id boundary %d", ai, boundary)
	}
}

func (c *Checker) open(ctx context.Context, r *Report, e dbconn.Endpoint) *sql.DB {
	db, cfg, err := dbconn.Open(ctx, e, dbconn.Options{DialTimeout: c.cfg.Timeout, MaxOpenConns: 2, Log: c.log})
	if err != nil {
		r.add(Fail, e.Role, "cannot connect: %v", err)
		return nil
	}
	r.add(OK, e.Role, "connected to %s", cfg.Addr)
	return db
}

func (c *Checker) checkSourceServer(ctx context.Context, r *Report, db *sql.DB) dbconn.ServerInfo {
	si, err := dbconn.Inspect(ctx, db)
	if err != nil {
		r.add(Fail, "source", "cannot read server settings: %v", err)
		return si
	}
	v := si.Version
	switch {
	case v.Flavor == dbconn.MariaDB && !v.AtLeast(10, 2):
		r.add(Warn, "version", "%s: MariaDB before 10.2 is untested", v)
	case v.Flavor == dbconn.MySQL && !v.AtLeast(5, 7):
		r.add(Fail, "version", "%s: MySQL before 5.7 lacks the GTID features csmh-sync needs: upgrade the source", v)
	default:
		r.add(OK, "version", "source is %s (%s)", v, v.Raw)
	}
	if !si.LogBin {
		r.add(Fail, "binlog", "binary logging is off on the source: start it with log_bin (and binlog_format=ROW, binlog_row_image=FULL)")
		return si
	}
	if si.BinlogFormat != "ROW" {
		r.add(Fail, "binlog", "binlog_format is %s: set binlog_format=ROW on the source (SET GLOBAL binlog_format='ROW' and in the config file)", si.BinlogFormat)
	}
	if si.BinlogRowImage != "" && si.BinlogRowImage != "FULL" {
		r.add(Fail, "binlog", "binlog_row_image is %s: set binlog_row_image=FULL on the source so updates carry every column", si.BinlogRowImage)
	}
	if si.BinlogFormat == "ROW" && (si.BinlogRowImage == "" || si.BinlogRowImage == "FULL") {
		r.add(OK, "binlog", "binlog on, ROW, FULL row image")
	}
	if err := dbconn.CheckBinlogCompression(ctx, db); errors.Is(err, dbconn.ErrBinlogCompression) {
		r.add(Fail, "binlog", "%v", err)
	}
	lvl, msg := gtidFinding(si, c.cfg.Position)
	r.add(lvl, "gtid", "%s", msg)
	if si.Version.Flavor == dbconn.MySQL && si.GTIDMode == "ON" && c.cfg.Position != "file" {
		if exec, err := dbconn.ExecutedGTID(ctx, db, si.Version.Flavor); err == nil {
			if f := taggedFinding(exec); f != "" {
				r.add(Fail, "gtid", "%s", f)
			}
		}
	}
	if c.cfg.ServerID != 0 && c.cfg.ServerID == si.ServerID {
		r.add(Fail, "server-id", "--server-id %d equals the source's server_id: choose an id no server or replica uses", c.cfg.ServerID)
	}
	switch ret, rds, err := dbconn.BinlogRetention(ctx, db); {
	case err != nil && rds:
		r.add(Warn, "retention", "the source is Amazon RDS and its binlog retention could not be read (%v): run %s TO the source user, or check it with CALL mysql.rds_show_configuration", err, RDSGrant)
	case err != nil:
	case rds && ret == dbconn.RDSNotRetained:
		r.add(Fail, "retention", "the source is Amazon RDS with 'binlog retention hours' NULL: it purges binlogs within minutes; run CALL mysql.rds_set_configuration('binlog retention hours', 72) on it")
	case rds && ret < 3*86400:
		r.add(Warn, "retention", "the source (Amazon RDS) keeps binlogs %s: a stop longer than that forces a new copy; consider CALL mysql.rds_set_configuration('binlog retention hours', 72)", time.Duration(ret)*time.Second)
	case ret > 0 && ret < 3*86400:
		r.add(Warn, "retention", "the source keeps binlogs %s: a stop longer than that forces a new copy; consider 3 days or more", time.Duration(ret)*time.Second)
	}
	return si
}

func (c *Checker) loadTable(ctx context.Context, r *Report, db *sql.DB, role string, n table.Name, flag string) *table.Table {
	t, err := table.Load(ctx, db, n)
	if errors.Is(err, table.ErrNotFound) {
		r.add(Fail, role+"-table", "%s does not exist on the %s (or the user cannot see it): check %s and the grants", n, role, flag)
		return nil
	}
	if err != nil {
		r.add(Fail, role+"-table", "%v", err)
		return nil
	}
	if err := t.CheckKey(); err != nil {
		r.add(Fail, role+"-table", "%v", err)
		return nil
	}
	r.add(OK, role+"-table", "%s exists (%d columns)", n, len(t.Columns))
	return t
}

func (c *Checker) checkColumns(r *Report, st, tt *table.Table) {
	errs, warns := table.Compare(st, tt)
	for _, p := range errs {
		r.add(Fail, "columns", "%s", p)
	}
	for _, p := range warns {
		r.add(Warn, "columns", "%s", p)
	}
	if len(errs) == 0 {
		r.add(OK, "columns", "every source column maps by name to the target without loss")
	}
}

// checkIDSpace makes sure copied ids can never land on ids the app writes into CSMHE.
func (c *Checker) checkIDSpace(ctx context.Context, r *Report, src, dst *sql.DB, st, tt *table.Table) {
	var srcMax sql.NullInt64
	if err := src.QueryRowContext(ctx, "SELECT MAX(id) FROM "+st.Name.Quoted()).Scan(&srcMax); err != nil {
		r.add(Fail, "id-space", "read the source's max id: %v", err)
		return
	}
	srcNext := max(st.AutoIncrement, uint64(srcMax.Int64)+1)
	var appMin sql.NullInt64
	if err := dst.QueryRowContext(ctx, "SELECT MIN(id) FROM "+tt.Name.Quoted()+" WHERE id > ?", srcMax.Int64).Scan(&appMin); err != nil {
		r.add(Fail, "id-space", "read the target's first app-written id: %v", err)
		return
	}
	boundary := tt.AutoIncrement
	what := fmt.Sprintf("target AUTO_INCREMENT %d", tt.AutoIncrement)
	if appMin.Valid && uint64(appMin.Int64) < boundary {
		boundary = uint64(appMin.Int64)
		what = fmt.Sprintf("first app-written target id %d", appMin.Int64)
	}
	if boundary <= srcNext {
		r.add(Fail, "id-space", "%s is not above the source's next id %d: raise it (ALTER TABLE %s AUTO_INCREMENT = %d, i.e. max(id) + STUDENTMODULEHISTORYEXTENDED_OFFSET)",
			what, srcNext, tt.Name, srcNext+10000)
		return
	}
	r.RunwayIDs = int64(boundary - srcNext)
	rate := writeRate(ctx, src, st, srcMax.Int64)
	if rate >= 0.01 {
		r.RunwayHours = float64(r.RunwayIDs) / rate / 3600
		r.add(OK, "id-space", "runway %d ids (%.1f h at the source's recent %.1f rows/s) before copied ids reach the %s", r.RunwayIDs, r.RunwayHours, rate, what)
	} else {
		r.add(OK, "id-space", "runway %d ids before copied ids reach the %s (source write rate unknown)", r.RunwayIDs, what)
	}
	if r.RunwayIDs < 100000 {
		r.add(Warn, "id-space", "runway is under 100,000 ids: raise the target AUTO_INCREMENT before the migration window")
	}
}

// writeRate estimates the source's inserts per second from the `created` times of its last 10,000 ids,
// a cheap primary-key range read.
func writeRate(ctx context.Context, db *sql.DB, st *table.Table, maxID int64) float64 {
	if st.Column("created") == nil || maxID <= 0 {
		return 0
	}
	var n int64
	var span sql.NullFloat64
	err := db.QueryRowContext(ctx, "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created), MAX(created)) / 1e6 FROM "+
		st.Name.Quoted()+" WHERE id > ?", maxID-10000).Scan(&n, &span)
	if err != nil || !span.Valid || span.Float64 <= 0 {
		return 0
	}
	return float64(n) / span.Float64
}

// checkAutoIncLockMode says which innodb_autoinc_lock_mode the target runs and what it means for the app's
// inserts into CSMHE while the backfill writes (docs/design.md, "What the copy costs the app").
func (c *Checker) checkAutoIncLockMode(ctx context.Context, r *Report, dst *sql.DB) {
	var mode int
	if err := dst.QueryRowContext(ctx, "SELECT @@innodb_autoinc_lock_mode").Scan(&mode); err != nil {
		r.add(Warn, "autoinc", "cannot read the target's innodb_autoinc_lock_mode: %v", err)
		return
	}
	switch mode {
	case 2:
		r.add(OK, "autoinc", "target innodb_autoinc_lock_mode=2: no copy statement holds CSMHE's AUTO-INC lock; same-server chunks are single INSERT … SELECT statements and cross-server chunks may use LOAD DATA")
	default:
		r.add(OK, "autoinc", "target innodb_autoinc_lock_mode=%d: copy statements that take CSMHE's AUTO-INC lock are cut to a few milliseconds so the app's inserts do not wait; innodb_autoinc_lock_mode=2 (a restart; needs binlog_format=ROW on the target) would let every chunk run as whole statements, the fastest paths (docs/benchmarks.md)", mode)
	}
}

// checkRedo says whether the backfill can watch the target's redo log (--max-redo-fill) and whether the
// target flushes pages in the background, which then sets the copy's speed (docs/design.md, "The redo log").
func checkRedo(ctx context.Context, r *Report, dst *sql.DB) {
	f, err := throttle.ReadFlushing(ctx, dst)
	switch {
	case err != nil:
		r.add(Warn, "redo", "cannot read the target's redo log use: %v", err)
	case !f.Visible:
		r.add(Warn, "redo", "%s", throttle.RedoInvisible)
	case f.NoBackgroundFlush():
		r.add(Warn, "redo", "target redo log limit %d MiB, %.0f%% used; innodb_max_dirty_pages_pct_lwm=0 (MariaDB's default) flushes no pages in the background until the log is 7/8 full, so the backfill, which slows to one chunk every 100 ms above --max-redo-fill of the limit, runs at the pace of InnoDB's flush-ahead: for the copy, SET GLOBAL innodb_max_dirty_pages_pct_lwm = 10 and innodb_io_capacity to what the disk sustains beside the app (docs/runbook.md, \"Target flushing\")",
			f.Redo.Limit>>20, 100*f.Redo.Fill())
	default:
		r.add(OK, "redo", "target redo log limit %d MiB, %.0f%% used (%s): above --max-redo-fill of it the backfill slows to one chunk every 100 ms, so the copy does not drive InnoDB to stop the app's writes for a sync flush", f.Redo.Limit>>20, 100*f.Redo.Fill(), f.Redo.Via)
	}
}

// GTIDStrictModeOff is preflight's failure and run's refusal for a MariaDB source with gtid_strict_mode OFF,
// its default (https://mariadb.com/kb/en/gtid/#gtid_strict_mode). csmh-sync compares MariaDB positions
// domain by domain on the sequence number (package gtid); only strict mode makes the server refuse to binlog
// a GTID whose sequence number is not above the domain's last (ER_GTID_STRICT_OUT_OF_ORDER), so without it
// "contains" could skip or repeat a transaction. A primary that only binlogs its own writes already writes
// ascending numbers, and turning strict mode on changes nothing there.
const GTIDStrictModeOff = "gtid_strict_mode is OFF on the source (MariaDB's default), and csmh-sync orders MariaDB GTIDs by sequence number, which only strict mode keeps ascending: run SET GLOBAL gtid_strict_mode=1 on the source and add gtid_strict_mode=1 to the [mariadb] section of its my.cnf, or follow binlog file and offset instead (run --position file)"

// taggedFinding is the failure for a MySQL source whose gtid_executed holds tagged GTIDs (MySQL 8.3+), which
// the stream cannot follow by GTID; "" otherwise.
func taggedFinding(executed string) string {
	g, err := gtid.Parse("mysql", executed)
	if err != nil || !g.Tagged() {
		return ""
	}
	return fmt.Sprintf("gtid_executed (%s) holds %s", g, gtid.TaggedUnsupported)
}

// gtidFinding says how the stream will follow the source. Without GTIDs (MySQL's default gtid_mode=OFF) it
// follows binlog file and offset, which is no failure; the operator learns what that mode does not survive. A
// MariaDB source without gtid_strict_mode fails (GTIDStrictModeOff).
//
// position is --position: with "file" every source is followed by file and offset, and what GTIDs it has does
// not matter; with "gtid" a MySQL source without them fails.
func gtidFinding(si dbconn.ServerInfo, position string) (Level, string) {
	if position == "file" {
		return OK, "--position file: the stream follows binlog file and offset; such a copy does not survive a failover to another server (GTIDs do)"
	}
	if position == "gtid" && si.Version.Flavor == dbconn.MySQL && si.GTIDMode != "ON" {
		return Fail, fmt.Sprintf("--position gtid, and gtid_mode is %s on the source: turn GTIDs on (gtid_mode=ON, enforce_gtid_consistency=ON), or follow binlog file and offset (--position auto or file)", si.GTIDMode)
	}
	if si.Version.Flavor == dbconn.MySQL && si.GTIDMode != "ON" {
		return OK, fmt.Sprintf("gtid_mode is %s: the stream follows binlog file and offset (--position auto); such a copy does not survive a failover to another server: turn GTIDs on (gtid_mode=ON, enforce_gtid_consistency=ON) for that", si.GTIDMode)
	}
	if si.Version.Flavor == dbconn.MariaDB && !si.GTIDStrictMode {
		return Fail, GTIDStrictModeOff
	}
	if si.Version.Flavor == dbconn.MariaDB {
		return OK, "GTIDs available (gtid_strict_mode=ON)"
	}
	return OK, "GTIDs available"
}
