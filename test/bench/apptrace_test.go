package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// traceVars are the server counters a trace samples: redo checkpoint pressure, dirty pages, log and binlog
// writes, and what is running.
var traceVars = []string{"Innodb_checkpoint_age", "Innodb_buffer_pool_pages_dirty", "Innodb_log_waits",
	"Innodb_os_log_written", "Binlog_bytes_written", "Threads_running", "Innodb_data_fsyncs", "Innodb_buffer_pool_wait_free"}

// tracer samples traceVars on one server every 50 ms while a phase runs (CSMH_BENCH_APP_TRACE=1), so a stall of
// the app can be set beside what the server was doing at that moment.
type tracer struct {
	mu      sync.Mutex
	t0      time.Time
	samples []traceSample
}

type traceSample struct {
	at   time.Duration
	vals map[string]int64
	load string // /proc/pressure/cpu "some" avg10 at the sample
}

func traceOn() bool { return os.Getenv("CSMH_BENCH_APP_TRACE") != "" }

func startTrace(ctx context.Context, db *sql.DB, t0 time.Time) *tracer {
	tr := &tracer{t0: t0}
	q := "SHOW GLOBAL STATUS WHERE Variable_name IN ('" + strings.Join(traceVars, "','") + "')"
	every(ctx, 50*time.Millisecond, func() {
		at := time.Since(tr.t0)
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return
		}
		s := traceSample{at: at, vals: map[string]int64{}}
		for rows.Next() {
			var k, v string
			if rows.Scan(&k, &v) == nil {
				n, _ := strconv.ParseInt(v, 10, 64)
				s.vals[k] = n
			}
		}
		rows.Close()
		tr.mu.Lock()
		tr.samples = append(tr.samples, s)
		tr.mu.Unlock()
	})
	return tr
}

// around prints the samples from 300 ms before to 100 ms after at, as deltas per sample for the counters.
func (tr *tracer) around(at time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var prev *traceSample
	for i := range tr.samples {
		s := &tr.samples[i]
		if s.at >= at-300*time.Millisecond && s.at <= at+150*time.Millisecond && prev != nil {
			d := func(k string) int64 { return s.vals[k] - prev.vals[k] }
			fmt.Printf("        %6.2fs ckpt_age %5.1f MiB dirty %6d log_waits %d redo %5.2f MiB binlog %5.2f MiB fsyncs %3d wait_free %d running %d\n",
				s.at.Seconds(), float64(s.vals["Innodb_checkpoint_age"])/(1<<20), s.vals["Innodb_buffer_pool_pages_dirty"],
				d("Innodb_log_waits"), float64(d("Innodb_os_log_written"))/(1<<20), float64(d("Binlog_bytes_written"))/(1<<20),
				d("Innodb_data_fsyncs"), d("Innodb_buffer_pool_wait_free"), s.vals["Threads_running"])
		}
		prev = s
	}
}
