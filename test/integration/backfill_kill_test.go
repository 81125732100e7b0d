package integration

import (
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// `csmh-sync backfill` is SIGKILLed at 5 random moments and restarted each time; the copy then completes with
// zero differences and the checkpoint's row count equals the target's (nothing copied twice, nothing lost).
func TestBackfillSurvivesSIGKILL(t *testing.T) {
	p := newPair(t, harness.Options{}, harness.SchemaOptions{TargetAutoIncrement: 50_000_000})
	src, dst, gen := p.seed(t, harness.GenOptions{Rows: 150000, Seed: 61})
	args := append([]string{"backfill"}, p.args("--workers", "3", "--chunk-time", "30ms", "--max-rows-per-second", "40000")...)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for kill := 1; kill <= 5; kill++ {
		cmd := exec.Command(binPath, args...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr, cmd.Env = &out, &out, os.Environ()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		wait := time.Duration(200+rng.Intn(600)) * time.Millisecond
		select {
		case err := <-done:
			t.Fatalf("backfill finished before kill %d (%v): make the data larger\n%s", kill, err, out.String())
		case <-time.After(wait):
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		var copied int64
		_ = dst.QueryRow("SELECT COALESCE(SUM(rows_copied), 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&copied)
		t.Logf("SIGKILL %d after %s: %d rows copied so far", kill, wait, copied)
	}
	r := csmh(t, 5*time.Minute, nil, args...)
	if r.code != 0 {
		t.Fatalf("final backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	requireEqual(t, src, dst)
	var inTarget, counted int64
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + harness.TargetTable).Scan(&inTarget); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT SUM(rows_copied) FROM edxapp_csmh.csmh_sync_backfill").Scan(&counted); err != nil {
		t.Fatal(err)
	}
	if inTarget != gen.Rows || counted != gen.Rows {
		t.Fatalf("target %d rows, checkpoint counts %d, source %d", inTarget, counted, gen.Rows)
	}
}
