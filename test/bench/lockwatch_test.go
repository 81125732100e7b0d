package bench

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// lockWatch records, while a copy runs, every InnoDB lock wait on db that has lasted a second or more: who
// waits, for which lock, and what the holder runs. A stall of the app's inserts behind CSMHE's AUTO-INC lock
// then names the transaction that held it.
type lockWatch struct {
	mu    sync.Mutex
	seen  map[string]bool
	waits []string
}

func watchLocks(ctx context.Context, db *sql.DB) *lockWatch {
	w := &lockWatch{seen: map[string]bool{}}
	every(ctx, 250*time.Millisecond, func() {
		rows, err := db.QueryContext(ctx, `SELECT r.trx_mysql_thread_id, TIMESTAMPDIFF(SECOND, r.trx_wait_started, NOW()),
			LEFT(IFNULL(r.trx_query, ''), 70), l.lock_type, l.lock_mode, IFNULL(l.lock_index, ''),
			b.trx_mysql_thread_id, b.trx_state, LEFT(IFNULL(b.trx_query, '(between statements)'), 70)
			FROM information_schema.INNODB_LOCK_WAITS x
			JOIN information_schema.INNODB_TRX r ON r.trx_id = x.requesting_trx_id
			JOIN information_schema.INNODB_TRX b ON b.trx_id = x.blocking_trx_id
			JOIN information_schema.INNODB_LOCKS l ON l.lock_id = x.blocking_lock_id
			WHERE r.trx_wait_started <= NOW() - INTERVAL 1 SECOND`)
		if err != nil {
			return
		}
		for rows.Next() {
			var rid, bid, waited int64
			var rq, ltype, lmode, lindex, bstate, bq string
			if rows.Scan(&rid, &waited, &rq, &ltype, &lmode, &lindex, &bid, &bstate, &bq) != nil {
				continue
			}
			key := fmt.Sprint(rid, bid, rq)
			w.mu.Lock()
			if !w.seen[key] {
				w.seen[key] = true
				w.waits = append(w.waits, fmt.Sprintf("thread %d waited ≥ %d s (%s) for a %s %s lock %s held by thread %d (%s: %s)",
					rid, waited, rq, ltype, lmode, lindex, bid, bstate, bq))
			}
			w.mu.Unlock()
		}
		rows.Close()
	})
	return w
}

// print lists the waits seen, if any.
func (w *lockWatch) print(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.waits {
		fmt.Printf("    %s: lock wait: %s\n", label, s)
	}
}

// every calls f every d, in a goroutine of its own, until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	go func() {
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f()
			}
		}
	}()
}
