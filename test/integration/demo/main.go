// Command demo runs csmh-sync's main job on two sandbox servers: it starts a source and a target mariadbd,
// loads ~200k realistic history rows, starts live writes like the edX app's, runs `csmh-sync run` (backfill
// and binlog stream), shows progress and lag, stops the writes, waits for the catch-up barrier, compares every
// row, and tears everything down. Run it with `make demo`.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(ctx context.Context) error {
	defer harness.Cleanup()
	bin := "bin/csmh-sync"
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s not found: run 'make demo' (it builds it)", bin)
	}
	step("starting two sandbox MariaDB servers (binlog ROW, GTID)")
	src, err := harness.Start(ctx, harness.Options{Log: slog.Default()})
	if err != nil {
		return err
	}
	defer src.Stop()
	dst, err := harness.Start(ctx, harness.Options{})
	if err != nil {
		return err
	}
	defer dst.Stop()
	fmt.Printf("    source %s   target %s\n", src.Addr(), dst.Addr())
	if err := src.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipTarget: true}); err != nil {
		return err
	}
	sdb, _ := src.Open("")
	ddb, _ := dst.Open("")
	defer sdb.Close()
	defer ddb.Close()

	step("loading ~200,000 CSMH rows (CAPA-shaped state, NULLs, 4-byte UTF-8, id gaps)")
	t0 := time.Now()
	gen, err := harness.GenerateCSMH(ctx, sdb, harness.SourceTable, harness.GenOptions{Rows: 200_000, Seed: 1})
	if err != nil {
		return err
	}
	fmt.Printf("    %d rows, ids %d..%d, %.0f MB, in %s\n", gen.Rows, gen.MinID, gen.MaxID, float64(gen.Bytes)/1e6, time.Since(t0).Round(time.Millisecond))
	// CSMHE as edX creates it: AUTO_INCREMENT = max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET.
	if err := dst.LoadEdxSchemaWith(ctx, harness.SchemaOptions{SkipSource: true, TargetAutoIncrement: uint64(gen.MaxID) + 2_000_000}); err != nil {
		return err
	}

	// csmh-sync connects as users holding exactly the documented grants (README.md, "Privileges").
	args := []string{"--source-dsn", src.SourceDSN(), "--target-dsn", dst.TargetDSN(), "--metrics-addr", "127.0.0.1:0"}
	step("csmh-sync preflight")
	if err := cli(ctx, bin, append([]string{"preflight"}, args...)); err != nil {
		return fmt.Errorf("preflight: %w", err)
	}

	step("live writes: 100 changes/s from 8 connections (inserts, updates, deletes across the whole id range)")
	load, err := harness.NewLoadGen(sdb, harness.LoadOptions{Table: harness.SourceTable, RowsPerSecond: 100, Conns: 8, MinID: 1})
	if err != nil {
		return err
	}
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(lctx) }()

	step("csmh-sync run: binlog stream + backfill (progress below)")
	daemon := exec.CommandContext(ctx, bin, append([]string{"run", "--workers", "4", "--progress-every", "2s"}, args...)...)
	daemon.Stdout, daemon.Stderr = os.Stdout, os.Stderr
	if err := daemon.Start(); err != nil {
		return err
	}
	defer func() { _ = daemon.Process.Kill(); _ = daemon.Wait() }()
	if err := waitFor(ctx, 10*time.Minute, func() (bool, error) {
		var segs, pending int
		err := ddb.QueryRow("SELECT COUNT(*), COALESCE(SUM(done = 0), 0) FROM edxapp_csmh.csmh_sync_backfill").Scan(&segs, &pending)
		return err == nil && segs > 0 && pending == 0, nil
	}); err != nil {
		return fmt.Errorf("backfill did not finish: %w", err)
	}
	step("backfill done; the stream keeps the target current while the app writes — status:")
	status(ctx, bin, args)

	step("stopping the live writes; waiting for the catch-up barrier")
	stopLoad()
	<-loadDone
	st := load.Stats()
	fmt.Printf("    the app wrote %d inserts, %d updates, %d deletes during the migration\n", st.Inserts, st.Updates, st.Deletes)
	start := time.Now()
	if err := waitFor(ctx, 2*time.Minute, func() (bool, error) { return caughtUp(sdb, ddb) }); err != nil {
		return err
	}
	fmt.Printf("    caught up %s after the last write\n", time.Since(start).Round(time.Millisecond))
	status(ctx, bin, args)

	step("csmh-sync verify (checksum per chunk on each server, drilled down to ids if anything differs)")
	if err := cli(ctx, bin, append([]string{"verify"}, args...)); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	step("csmh-sync cutover: the barrier before flipping edX's read flag")
	if err := cli(ctx, bin, append([]string{"cutover", "--timeout", "60s"}, args...)); err != nil {
		return fmt.Errorf("cutover: %w", err)
	}

	step("independent check: every row, every column, compared by the test harness")
	diffs, n, err := harness.Diff(ctx, sdb, harness.SourceTable, ddb, harness.TargetTable, 0, 1<<62)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%d differences: %v", n, diffs)
	}
	var rows int64
	_ = sdb.QueryRow("SELECT COUNT(*) FROM " + harness.SourceTable).Scan(&rows)
	fmt.Printf("    equal: %d rows, every column\n", rows)

	step("stopping csmh-sync (SIGTERM) and tearing the sandbox down")
	_ = daemon.Process.Signal(syscall.SIGTERM)
	return nil
}

func status(ctx context.Context, bin string, args []string) {
	_ = cli(ctx, bin, append([]string{"status"}, args...))
}

// cli runs one csmh-sync command with its output on the terminal.
func cli(ctx context.Context, bin string, args []string) error {
	c := exec.CommandContext(ctx, bin, args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	return c.Run()
}

func caughtUp(src, dst *sql.DB) (bool, error) {
	var exec, pos string
	if err := src.QueryRow("SELECT @@gtid_binlog_pos").Scan(&exec); err != nil {
		return false, err
	}
	if err := dst.QueryRow("SELECT gtid_set FROM edxapp_csmh.csmh_sync_state").Scan(&pos); err != nil {
		return false, err
	}
	e, _ := gtid.Parse("mariadb", exec)
	c, _ := gtid.Parse("mariadb", pos)
	return c.Contains(e), nil
}

func waitFor(ctx context.Context, within time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ok, _ := cond(); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("not within %s", within)
}
