package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/csmh-sync/csmh-sync/runner"
	"github.com/csmh-sync/csmh-sync/verify"
)

func buildVerify(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	v := &runner.Verify{}
	commonFlags(fs, &v.Common, lf)
	fs.StringVar(&v.Mode, "mode", "checksum", "count (rows per chunk), checksum (count + row hashes, drilled down to ids) or rows (every row, exact)")
	fs.Uint64Var(&v.StartID, "start-id", 0, "first id to compare (default: the lowest present)")
	fs.Uint64Var(&v.EndID, "end-id", 0, "last id to compare (default: the highest present, below the app's id range)")
	fs.IntVar(&v.ChunkRows, "chunk-rows", verify.DefaultChunkRows, "source rows per chunk")
	fs.IntVar(&v.Workers, "workers", 2, "chunks compared in parallel")
	fs.BoolVar(&v.Incremental, "incremental", false, "re-check only chunks never verified equal or touched by replication since (ledger in the target schema)")
	fs.BoolVar(&v.Repair, "repair", false, "re-copy differing rows from the source and verify them again")
	fs.DurationVar(&v.RepairDeadline, "repair-deadline", verify.DefaultRepairDeadline, "the longest one repair batch holds its source rows locked (positive); a batch that reaches it is repaired in halves")
	fs.DurationVar(&v.CatchUpTimeout, "catch-up-timeout", 5*time.Minute, "how long to wait for replication to apply what the source executed")
	fs.BoolVar(&v.JSON, "json", false, "print the result as JSON")
	return withLog{v, func() { v.Out, v.TTY, v.Log = env.stdout, env.tty, env.log }}
}

func buildCutover(fs *pflag.FlagSet, lf *logFlags, env *environ) command {
	c := &runner.Cutover{}
	commonFlags(fs, &c.Common, lf)
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "how long to wait for the target to apply what the source has committed")
	fs.Uint64Var(&c.MinRunway, "min-runway", 1_000_000, "ids CSMHE's AUTO_INCREMENT must stay above CSMH's")
	fs.BoolVar(&c.BumpAutoIncrement, "bump-auto-increment", false, "raise CSMHE's AUTO_INCREMENT to meet --min-runway")
	fs.StringVar(&c.Mode, "mode", "checksum", "verify mode: count, checksum or rows")
	fs.IntVar(&c.Workers, "workers", 2, "verify chunks compared in parallel")
	fs.BoolVar(&c.Full, "full", false, "compare every chunk, instead of only those verify's ledger does not prove equal and untouched since")
	fs.BoolVar(&c.JSON, "json", false, "print the verdict as JSON")
	return withLog{c, func() { c.Out, c.Log = env.stdout, env.log }}
}
