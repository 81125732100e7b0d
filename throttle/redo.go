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
)

// DefaultMaxRedoFill is the default --max-redo-fill: the copy waits while the target's redo log holds more
// than this fraction of what InnoDB lets it hold before every writer waits (docs/design.md, "What the copy
// costs the app"). Below MariaDB's point of flushing ahead (7/8 of it), so the server's background flushing, not
// its writers, makes the room.
const DefaultMaxRedoFill = 0.8

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

// mysqlSyncFraction is the part of MySQL's redo capacity at which its writers start flushing synchronously:
// InnoDB keeps a tenth of the capacity as a safety margin and starts the synchronous preflush at 15/16 of
// the rest (MySQL 5.7 and 8.0's max_modified_age_sync), 0.84 of the capacity; MariaDB, which reports the
// limit itself, stops writers at 0.81 of its log. 0.8 is on the safe side of both.
const mysqlSyncFraction = 0.8

// redoStatus are the status variables ReadRedo reads: MariaDB 10.5+ reports the checkpoint age and its
// limit; MySQL 8.0.30+ the current and checkpoint LSNs and the capacity.
var redoStatus = []string{"Innodb_checkpoint_age", "Innodb_checkpoint_max_age",
	"Innodb_redo_log_current_lsn", "Innodb_redo_log_checkpoint_lsn", "Innodb_redo_log_capacity_resized"}

// ReadRedo reads the server's redo log use. ok is false where the server shows it nowhere this user can read
// (Aurora, whose storage has no redo log of this kind; MySQL before 8.0.30 without PROCESS or with the
// INNODB_METRICS log counters disabled).
func ReadRedo(ctx context.Context, db *sql.DB) (r Redo, ok bool, err error) {
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('"+strings.Join(redoStatus, "','")+"')")
	if err != nil {
		return Redo{}, false, fmt.Errorf("read redo log status: %w", err)
	}
	st := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return Redo{}, false, fmt.Errorf("read redo log status: %w", err)
		}
		st[k] = v
	}
	if err := rows.Close(); err != nil {
		return Redo{}, false, fmt.Errorf("read redo log status: %w", err)
	}
	if r, ok := parseRedoStatus(st); ok {
		return r, true, nil
	}
	// MySQL 5.7 and 8.0 before 8.0.30: INNODB_METRICS' log counters, where enabled and readable (PROCESS).
	metrics := map[string]string{}
	rows, err = db.QueryContext(ctx, "SELECT NAME, `COUNT` FROM information_schema.INNODB_METRICS WHERE NAME IN ('log_lsn_checkpoint_age', 'log_max_modified_age_sync')")
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return Redo{}, false, nil // no PROCESS privilege, or no such table: not visible
	}
	if err != nil {
		return Redo{}, false, fmt.Errorf("read redo log metrics: %w", err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return Redo{}, false, fmt.Errorf("read redo log metrics: %w", err)
		}
		metrics[k] = v
	}
	if err := rows.Close(); err != nil {
		return Redo{}, false, fmt.Errorf("read redo log metrics: %w", err)
	}
	r, ok = parseRedoMetrics(metrics)
	return r, ok, nil
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

// redoWatch reads a server's redo use at most once per redoFresh for all the workers that ask.
type redoWatch struct {
	db      *sql.DB
	mu      sync.Mutex
	at      time.Time
	last    Redo
	visible bool
	onRead  func(Redo)
}

// redoFresh is how long one reading serves: the copy writes a few MiB of redo in that time, against a margin of
// a quarter of the log.
const redoFresh = 20 * time.Millisecond

func (w *redoWatch) read(ctx context.Context) (Redo, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.at) < redoFresh {
		return w.last, w.visible, nil
	}
	r, ok, err := ReadRedo(ctx, w.db)
	if err != nil {
		return Redo{}, false, err
	}
	w.at, w.last, w.visible = time.Now(), r, ok
	if ok && w.onRead != nil {
		w.onRead(r)
	}
	return r, ok, nil
}
