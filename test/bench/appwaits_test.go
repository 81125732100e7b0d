package bench

import (
	"database/sql"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// waitsOn (CSMH_BENCH_APP_WAITS=1) starts the servers with performance_schema's wait and stage instruments on
// and prints, for each phase, what the app's sessions waited on, per operation, beside the baseline: where the
// copy's cost to the app goes inside the server. The copy then connects as lowPriorityUser, so its waits are
// not the app's. The instruments cost the servers time of their own: the phase's latencies are not the bench's.
func waitsOn() bool { return os.Getenv("CSMH_BENCH_APP_WAITS") != "" }

var waitsServerArgs = []string{"--performance-schema=ON", "--performance-schema-instrument=%=ON",
	"--performance-schema-consumer-events-waits-current=ON", "--performance-schema-consumer-events-stages-current=ON",
	"--performance-schema-consumer-events-statements-current=ON", "--performance-schema-consumer-events-statements-history-long=ON", "--performance-schema-consumer-events-stages-history-long=ON",
	"--performance-schema-consumer-events-waits-history-long=ON", "--performance-schema-events-statements-history-long-size=100000",
	"--performance-schema-events-stages-history-long-size=1000000", "--performance-schema-events-waits-history-long-size=1000000"}

// waitProfile is one user's summed wait time by event name.
type waitProfile map[string]time.Duration

func resetWaits(b interface{ Fatal(...any) }, dbs ...*sql.DB) {
	for _, db := range dbs {
		for _, t := range []string{"events_waits_summary_by_user_by_event_name", "events_stages_summary_by_user_by_event_name",
			"events_statements_history_long", "events_stages_history_long", "events_waits_history_long"} {
			if _, err := db.Exec("TRUNCATE TABLE performance_schema." + t); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func readWaits(b interface{ Fatal(...any) }, user string, dbs ...*sql.DB) waitProfile {
	p := waitProfile{}
	for i, db := range dbs {
		rows, err := db.Query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Binlog_commits', 'Binlog_group_commits', 'Binlog_bytes_written', 'Innodb_os_log_written', 'Innodb_log_writes')")
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			var k string
			var v int64
			if err := rows.Scan(&k, &v); err != nil {
				b.Fatal(err)
			}
			p[fmt.Sprintf("status s%d %s", i, k)] = time.Duration(v)
		}
		rows.Close()
	}
	for i, db := range dbs {
		for _, t := range []string{"events_waits_summary_by_user_by_event_name", "events_stages_summary_by_user_by_event_name"} {
			rows, err := db.Query("SELECT EVENT_NAME, SUM_TIMER_WAIT FROM performance_schema."+t+" WHERE USER = ? AND SUM_TIMER_WAIT > 0", user)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
				var name string
				var ps int64
				if err := rows.Scan(&name, &ps); err != nil {
					b.Fatal(err)
				}
				p[fmt.Sprintf("s%d %s", i, name)] += time.Duration(ps / 1000)
			}
			rows.Close()
		}
	}
	return p
}

// printWaits prints the events whose time per app operation rose most from base to during, and the largest.
func printWaits(label string, base, start, during waitProfile, baseOps, duringOps int) {
	type row struct {
		name string
		b, d float64 // µs per operation
	}
	var rs []row
	for _, k := range slices.Sorted(maps.Keys(during)) {
		if strings.HasPrefix(k, "status ") {
			fmt.Printf("      %-60s %d\n", k, during[k]-start[k])
		}
	}
	for k := range during {
		if strings.HasPrefix(k, "status ") {
			continue
		}
		rs = append(rs, row{k, float64(base[k].Microseconds()) / float64(max(baseOps, 1)), float64(during[k].Microseconds()) / float64(max(duringOps, 1))})
	}
	slices.SortFunc(rs, func(x, y row) int {
		dx, dy := x.d-x.b, y.d-y.b
		switch {
		case dx > dy:
			return -1
		case dx < dy:
			return 1
		}
		return 0
	})
	fmt.Printf("    waits of the app's sessions, µs per operation (baseline → during), %s:\n", label)
	for _, r := range rs[:min(len(rs), 14)] {
		fmt.Printf("      %-70s %9.1f → %9.1f\n", r.name, r.b, r.d)
	}
}

// printSlowStatements prints, for the app's statements that took the server over 8 ms, where their time went:
// their stages, and the waits within them.
func printSlowStatements(b interface{ Fatal(...any) }, dbs ...*sql.DB) {
	for i, db := range dbs {
		var all, slow int
		if err := db.QueryRow(`SELECT COUNT(*), COUNT(IF(s.TIMER_WAIT > 8000000000, 1, NULL)) FROM performance_schema.events_statements_history_long s
			JOIN performance_schema.threads t USING (THREAD_ID) WHERE t.PROCESSLIST_USER = 'root'`).Scan(&all, &slow); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("    s%d: app statements %d, over 8 ms in the server %d\n", i, all, slow)
		rows, err := db.Query(`SELECT s.THREAD_ID, s.EVENT_ID, s.TIMER_WAIT, LEFT(IFNULL(s.SQL_TEXT, s.EVENT_NAME), 40) FROM performance_schema.events_statements_history_long s
			JOIN performance_schema.threads t USING (THREAD_ID) WHERE t.PROCESSLIST_USER = 'root' AND s.TIMER_WAIT > 8000000000
			ORDER BY s.TIMER_WAIT DESC LIMIT 6`)
		if err != nil {
			b.Fatal(err)
		}
		type st struct {
			th, ev, ps int64
			q          string
		}
		var sts []st
		for rows.Next() {
			var x st
			if err := rows.Scan(&x.th, &x.ev, &x.ps, &x.q); err != nil {
				b.Fatal(err)
			}
			sts = append(sts, x)
		}
		rows.Close()
		for _, x := range sts {
			fmt.Printf("      %.1f ms %s\n", float64(x.ps)/1e9, x.q)
			srows, err := db.Query(`SELECT EVENT_ID, EVENT_NAME, TIMER_WAIT FROM performance_schema.events_stages_history_long
				WHERE THREAD_ID = ? AND NESTING_EVENT_ID = ? AND TIMER_WAIT > 200000000 ORDER BY TIMER_WAIT DESC`, x.th, x.ev)
			if err != nil {
				b.Fatal(err)
			}
			type stage struct {
				id, ps int64
				name   string
			}
			var stages []stage
			for srows.Next() {
				var g stage
				if err := srows.Scan(&g.id, &g.name, &g.ps); err != nil {
					b.Fatal(err)
				}
				stages = append(stages, g)
			}
			srows.Close()
			for _, g := range stages {
				var waits sql.NullString
				if err := db.QueryRow(`SELECT GROUP_CONCAT(CONCAT(n, ' ', ROUND(t / 1e9, 2)) ORDER BY t DESC SEPARATOR ', ') FROM
					(SELECT EVENT_NAME n, SUM(TIMER_WAIT) t FROM performance_schema.events_waits_history_long
					 WHERE THREAD_ID = ? AND NESTING_EVENT_ID = ? GROUP BY EVENT_NAME HAVING t > 200000000) w`, x.th, g.id).Scan(&waits); err != nil {
					b.Fatal(err)
				}
				fmt.Printf("        %-32s %6.2f ms  waits: %s\n", g.name, float64(g.ps)/1e9, waits.String)
			}
		}
	}
}
