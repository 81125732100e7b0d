package bench

import (
	"context"
	"database/sql"
	"syscall"
	"testing"
	"time"
)

// lowPriorityUser is the account the low-priority copy connects as, so its sessions' server threads can be
// told from the app's.
const lowPriorityUser = "csmh_lowprio"

// addLowPriorityUser creates lowPriorityUser with every privilege, without a password, on each server.
func addLowPriorityUser(b *testing.B, dbs ...*sql.DB) {
	b.Helper()
	for _, db := range dbs {
		mustExec(b, db, "CREATE USER IF NOT EXISTS "+lowPriorityUser+"@'%'")
		mustExec(b, db, "GRANT ALL PRIVILEGES ON *.* TO "+lowPriorityUser+"@'%'")
	}
}

// reniceSessions sets, until ctx ends, the nice value of the server threads serving lowPriorityUser's
// sessions to 19, and back to 0 for threads that no longer serve one (the server's thread cache hands a
// thread to the next session), polling the servers' process lists. It does on this machine what MySQL 8's
// resource group with THREAD_PRIORITY = 19 does to a session's thread on Linux (setpriority on the thread),
// for a server (MariaDB) that has no resource groups. It returns when ctx ends, with every thread it set back.
func reniceSessions(ctx context.Context, dbs ...*sql.DB) {
	low := map[int]bool{}
	defer func() {
		for tid := range low {
			syscall.Setpriority(syscall.PRIO_PROCESS, tid, 0)
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		now := map[int]bool{}
		for _, db := range dbs {
			rows, err := db.QueryContext(ctx, "SELECT TID FROM information_schema.PROCESSLIST WHERE USER = ?", lowPriorityUser)
			if err != nil {
				continue
			}
			for rows.Next() {
				var tid int
				if rows.Scan(&tid) == nil && tid > 0 {
					now[tid] = true
				}
			}
			rows.Close()
		}
		for tid := range now {
			if !low[tid] {
				syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19)
				low[tid] = true
			}
		}
		for tid := range low {
			if !now[tid] {
				syscall.Setpriority(syscall.PRIO_PROCESS, tid, 0)
				delete(low, tid)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
