package integration

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// forwarder is a TCP address that leads to one server until it is moved to another, as a VIP or a DNS name
// does after a failover: moving it cuts every connection it carries.
type forwarder struct {
	ln    net.Listener
	mu    sync.Mutex
	to    string
	conns map[net.Conn]struct{}
}

func startForwarder(t *testing.T, to string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, to: to, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			to := f.to
			f.mu.Unlock()
			s, err := net.DialTimeout("tcp", to, 5*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			f.mu.Lock()
			f.conns[c], f.conns[s] = struct{}{}, struct{}{}
			f.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(s, c); _ = s.Close() })
			wg.Go(func() { _, _ = io.Copy(c, s); _ = c.Close() })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		f.cut()
		wg.Wait()
	})
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

// moveTo leads new connections to another address and, with cut, ends the ones open (a VIP's move); without,
// they go on to the old server (a DNS name's move, the old server still up).
func (f *forwarder) moveTo(to string, cut bool) {
	f.mu.Lock()
	f.to = to
	f.mu.Unlock()
	if cut {
		f.cut()
	}
}

func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}

// In file mode, a source address that leads to another server mid-run (a VIP or DNS name after a failover)
// stops the stream when it reconnects, naming both servers, instead of streaming from the checkpoint's file
// and offset in the other server's binlog, whose files have the same names. The other server's binlog is
// longer than the checkpoint's offset, so an offset check alone would have let it through. After a DNS move
// the old server may still be up and the pool's connections still lead there: only the binlog connection
// ends (killed on the old server), and the identity check must not ask through the pool.
func TestFilePositionStreamStopsWhenTheSourceAddressMoves(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  bool
	}{{"every connection cut", true}, {"the pool still on the old server", false}} {
		t.Run(tc.name, func(t *testing.T) { sourceAddressMoves(t, tc.cut) })
	}
}

func sourceAddressMoves(t *testing.T, cut bool) {
	ctx := context.Background()
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 1_000_000})
	src, dst, _ := p.seed(t, harness.GenOptions{Rows: 500, Seed: 47})
	other := harness.StartT(t, harness.Options{})
	if err := other.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		t.Fatal(err)
	}
	odb, err := other.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close()
	if _, err := harness.GenerateCSMH(ctx, odb, harness.SourceTable, harness.GenOptions{Rows: 3000, Seed: 48}); err != nil {
		t.Fatal(err)
	}

	fwd := startForwarder(t, p.src.Addr())
	cfg, err := mysql.ParseDSN(p.src.SourceDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = fwd.addr()
	pr := startProc(t, "run", "--source-dsn", cfg.FormatDSN(), "--target-dsn", p.dst.TargetDSN(), "--metrics-addr", "",
		"--position", "file", "--log-format", "json")
	harness.Eventually(t, 2*time.Minute, "the backfill done", func() (bool, error) {
		if pr.exited() {
			t.Fatalf("run exited:\n%s", tailStr(pr.output(), 30))
		}
		return backfillDone(dst)
	})
	const streamed = 999_001
	if _, err := src.Exec("INSERT INTO "+harness.SourceTable+" (id, created, student_module_id) VALUES (?, NOW(6), 3)", streamed); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, time.Minute, "a new source row streamed to the target", func() (bool, error) {
		var n int
		err := dst.QueryRow("SELECT COUNT(*) FROM "+harness.TargetTable+" WHERE id = ?", streamed).Scan(&n)
		return n == 1, err
	})
	var pos string
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint %s; the source's address now leads to the other server", pos)

	fwd.moveTo(other.Addr(), cut)
	if !cut {
		var id int64
		if err := src.QueryRow("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'").Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Exec("KILL ?", id); err != nil {
			t.Fatal(err)
		}
	}
	if err := pr.wait(2 * time.Minute); err == nil {
		t.Fatalf("run went on streaming from the other server:\n%s", tailStr(pr.output(), 30))
	}
	if out := pr.output(); !strings.Contains(out, "the source now answering is") || !strings.Contains(out, "file positions do not carry over between servers") {
		t.Fatalf("run stopped without naming the changed source:\n%s", tailStr(out, 30))
	}
	requireEqual(t, src, dst) // nothing of the other server's binlog reached the target
}
