package runner

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
)

// catchUp returns once the checkpoint in the target contains every transaction the source had executed when
// catchUp was called: the barrier cutover and verify stand on. The stream itself is applied by a running
// `csmh-sync run`; this only watches the checkpoint it commits.
//
// In file mode (the checkpoint holds a binlog file/position) the barrier is the source's current file and
// offset, and "behind" counts bytes.
func catchUp(ctx context.Context, src *sql.DB, store *checkpoint.Store, flavor string, poll time.Duration) (*gtid.Set, error) {
	first, err := store.Load(ctx)
	if err != nil {
		return nil, err
	}
	want, err := sourcePosition(ctx, src, flavor, gtid.IsFilePos(first.GTID))
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var have *gtid.Set
	timedOut := func() error {
		behind := "checkpoint not read"
		if have != nil {
			unit := "transactions"
			if have.IsFile() {
				unit = "bytes of binlog"
			}
			behind = fmt.Sprintf("checkpoint %s, %d %s behind", have, have.Behind(want), unit)
		}
		return fmt.Errorf("the target has not applied the source's position %s (%s): is 'csmh-sync run' running and connected? %w",
			want, behind, ctx.Err())
	}
	for {
		st, err := store.Load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return want, timedOut()
			}
			return want, err
		}
		if have, err = gtid.Parse(flavor, st.GTID); err != nil {
			return want, err
		}
		if have.Contains(want) {
			return want, nil
		}
		select {
		case <-ctx.Done():
			return want, timedOut()
		case <-t.C:
		}
	}
}

// sourcePosition is what the source has written to its binlog: its executed GTIDs, or in file mode its
// current binlog file and offset.
func sourcePosition(ctx context.Context, src *sql.DB, flavor string, file bool) (*gtid.Set, error) {
	if file {
		name, pos, err := dbconn.CurrentBinlogPos(ctx, src)
		if err != nil {
			return nil, err
		}
		return gtid.Parse(flavor, gtid.FilePos{File: name, Pos: pos}.String())
	}
	execStr, err := dbconn.ExecutedGTID(ctx, src, dbconn.Flavor(flavor))
	if err != nil {
		return nil, err
	}
	return gtid.Parse(flavor, execStr)
}
