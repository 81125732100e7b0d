package throttle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// DefaultMaxRedoFill is the default --max-redo-fill: chunk starts trickle (redoTrickle) while the target's redo
// log holds more than this fraction of what InnoDB lets it hold before every writer waits (docs/design.md, "The
// redo log"). Above MariaDB's point of flushing ahead (7/8 of it), where its page cleaner makes room even with
// adaptive flushing off (its default); and a twentieth of the limit short of a stall, for the chunks in flight.
const DefaultMaxRedoFill = 0.95

// Redo is how much of a server's redo log is in use: the bytes of redo written since the last checkpoint (the
// checkpoint age) and the age at which InnoDB makes every writer wait until pages are flushed ("sync flush",
// "furious flushing"). Every change of every session waits then, the app's included: the copy must not drive
// the log there.
type Redo struct {
	Age, Limit int64
	Via        string // the status variables or metrics it was read from
}

// Fill is Age as a fraction of Limit.
func (r Redo) Fill() float64 {
	if r.Limit <= 0 {
		return 0
	}
	return float64(r.Age) / float64(r.Limit)
}

// mysqlSyncFraction is the part of MySQL 8.0.30+'s redo capacity taken as the limit. Its writers start
// flushing synchronously at about 0.83 of the capacity (15/16 of the 30/32 of 0.95 it lets them use) and stop
// at about 0.89; MariaDB, which reports its limit itself, stops writers at 0.81 of its log. 0.8 is on the safe
// side of all of them.
const mysqlSyncFraction = 0.8

// redoStatus are the status variables ReadRedo reads: MariaDB 10.5+ reports the checkpoint age and its
// limit; MySQL 8.0.30+ the current and checkpoint LSNs and the capacity.
var redoStatus = []string{"Innodb_checkpoint_age", "Innodb_checkpoint_max_age",
	"Innodb_redo_log_current_lsn", "Innodb_redo_log_checkpoint_lsn", "Innodb_redo_log_capacity_resized"}

// ReadRedo reads the server's redo log use. ok is false where the server shows it nowhere this user can read
// (Aurora, whose storage has no redo log of this kind; MySQL before 8.0.30 or MariaDB before 10.5 without
// PROCESS or with the INNODB_METRICS log counters disabled).
func ReadRedo(ctx context.Context, db *sql.DB) (r Redo, ok bool, err error) {
	st, err := readPairs(ctx, db, "SHOW GLOBAL STATUS WHERE Variable_name IN ('"+strings.Join(redoStatus, "','")+"')")
	if err != nil {
		return Redo{}, false, fmt.Errorf("read redo log status: %w", err)
	}
	if r, ok := parseRedoStatus(st); ok {
		return r, true, nil
	}
	// MySQL 5.7 and 8.0 before 8.0.30: INNODB_METRICS' log counters, where enabled (a disabled counter keeps
	// its last value) and readable.
	metrics, err := readPairs(ctx, db, "SELECT NAME, `COUNT` FROM information_schema.INNODB_METRICS "+
		"WHERE NAME IN ('log_lsn_checkpoint_age', 'log_max_modified_age_sync') AND STATUS = 'enabled'")
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1227 || me.Number == 1142 || me.Number == 1109 || me.Number == 1146 || me.Number == 1054) {
		return Redo{}, false, nil // no PROCESS privilege, no such table or column (MariaDB before 10.5): not visible
	}
	if err != nil {
		return Redo{}, false, fmt.Errorf("read redo log metrics: %w", err)
	}
	r, ok = parseRedoMetrics(metrics)
	return r, ok, nil
}

// RedoInvisible says what a server that shows no redo log use costs the copy, and where that happens.
const RedoInvisible = "the target shows no redo log use (Aurora; MySQL before 8.0.30 or MariaDB before 10.5 without PROCESS or with the INNODB_METRICS log counters off: SET GLOBAL innodb_monitor_enable = 'log_lsn_checkpoint_age,log_max_modified_age_sync'): the backfill cannot wait for its page flushing, and a full redo log stalls the app's writes; watch their latency"

// Flushing is what a target shows of its redo log and of the page flushing that empties it.
type Flushing struct {
	Redo    Redo
	Visible bool // Redo was read; false where ReadRedo's ok is
	// The flushing settings; DirtyLWM is -1 where they could not be read.
	IOCapacity, IOCapacityMax int64
	DirtyLWM                  float64
}

// NoBackgroundFlush is true for MariaDB with innodb_max_dirty_pages_pct_lwm=0, its default: its page cleaner
// then flushes nothing until the redo log is 7/8 of its limit, and a copy that waits below that point waits
// for InnoDB's flush-ahead alone.
func (f Flushing) NoBackgroundFlush() bool {
	return f.Visible && f.DirtyLWM == 0 && f.Redo.Via == "Innodb_checkpoint_age"
}

// ReadFlushing reads the server's redo log use and its flushing settings. Only a failure to read the redo log
// is an error; unreadable settings leave DirtyLWM at -1.
func ReadFlushing(ctx context.Context, db *sql.DB) (Flushing, error) {
	r, ok, err := ReadRedo(ctx, db)
	if err != nil || !ok {
		return Flushing{DirtyLWM: -1}, err
	}
	f := Flushing{Redo: r, Visible: true}
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_io_capacity, @@GLOBAL.innodb_io_capacity_max, @@GLOBAL.innodb_max_dirty_pages_pct_lwm").
		Scan(&f.IOCapacity, &f.IOCapacityMax, &f.DirtyLWM); err != nil {
		f.DirtyLWM = -1
	}
	return f, nil
}

// readPairs reads a two-column result into a map.
func readPairs(ctx context.Context, db *sql.DB, q string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, rows.Err()
}

func parseRedoStatus(st map[string]string) (Redo, bool) {
	num := func(k string) (int64, bool) {
		n, err := strconv.ParseInt(st[k], 10, 64)
		return n, err == nil
	}
	if age, ok := num("Innodb_checkpoint_age"); ok {
		if limit, ok := num("Innodb_checkpoint_max_age"); ok && limit > 0 {
			return Redo{Age: age, Limit: limit, Via: "Innodb_checkpoint_age"}, true
		}
	}
	cur, ok1 := num("Innodb_redo_log_current_lsn")
	chk, ok2 := num("Innodb_redo_log_checkpoint_lsn")
	capacity, ok3 := num("Innodb_redo_log_capacity_resized")
	if ok1 && ok2 && ok3 && capacity > 0 && cur >= chk {
		return Redo{Age: cur - chk, Limit: int64(float64(capacity) * mysqlSyncFraction), Via: "Innodb_redo_log_current_lsn"}, true
	}
	return Redo{}, false
}

// parseRedoMetrics reads INNODB_METRICS' counters; a disabled counter reads 0, which is no limit at all.
func parseRedoMetrics(m map[string]string) (Redo, bool) {
	age, err1 := strconv.ParseInt(m["log_lsn_checkpoint_age"], 10, 64)
	limit, err2 := strconv.ParseInt(m["log_max_modified_age_sync"], 10, 64)
	if err1 != nil || err2 != nil || limit <= 0 {
		return Redo{}, false
	}
	return Redo{Age: age, Limit: limit, Via: "INNODB_METRICS"}, true
}

// redoWatch reads a server's redo use at most once per redoFresh for all the workers that ask. A server that
// does not show it is asked again only after redoUnseen; one whose status query fails for good (not a lost
// connection or the like) is not watched any more: the guard then stands aside rather than stop the copy.
type redoWatch struct {
	db      *sql.DB
	mu      sync.Mutex
	at      time.Time
	last    Redo
	visible bool
	off     bool
	onRead  func(Redo)
	passed  time.Time // when trickle last let a chunk start
}

// redoTrickle spaces the chunk starts of all workers while the redo log is above the limit: one chunk every
// redoTrickle, not none. InnoDB flushes ahead of the log's limit when a write commits above 7/8 of it and
// wakes its page cleaner at every write; a copy that stops altogether leaves the cleaner to its once-a-second
// round, and the log stays full for tens of seconds (docs/design.md, "The redo log"). At the default 50 ms
// chunks one chunk every 100 ms is half a worker's writes.
const redoTrickle = 100 * time.Millisecond

// due reports whether trickle's next slot is free at now, without taking it.
func (w *redoWatch) due(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return now.Sub(w.passed) >= redoTrickle
}

// trickle reports whether a chunk may start although the log is above the limit: once per redoTrickle.
func (w *redoWatch) trickle(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.passed) < redoTrickle {
		return false
	}
	w.passed = now
	return true
}

const (
	// redoFresh is how long one reading serves: the copy writes a few MiB of redo in that time, against a
	// margin of a tenth of the log.
	redoFresh = 20 * time.Millisecond
	// redoUnseen is how long "not shown" serves.
	redoUnseen = time.Minute
)

func (w *redoWatch) read(ctx context.Context) (Redo, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off || time.Since(w.at) < redoFresh || (!w.visible && !w.at.IsZero() && time.Since(w.at) < redoUnseen) {
		return w.last, w.visible && !w.off, nil
	}
	r, ok, err := ReadRedo(ctx, w.db)
	if err != nil {
		if !dbconn.IsTransient(err) && ctx.Err() == nil {
			w.off = true // see the type's comment; the start logged the same error
			return Redo{}, false, nil
		}
		return Redo{}, false, err
	}
	w.at, w.last, w.visible = time.Now(), r, ok
	if ok && w.onRead != nil {
		w.onRead(r)
	}
	return r, ok, nil
}
