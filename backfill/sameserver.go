package backfill

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// chooseSameServer decides the copy path. The same-server path runs `INSERT … SELECT` on the target's
// connections, reading the source table by name there; on any server but the source's that reads whatever
// table of that name the target holds (an error, or a stale copy copied silently). So it is taken only when
// dbconn.SameServer proves one server, on every Run, and only if the target's connections may read the source
// table; otherwise chunks go across connections, which is correct anywhere. Config.SameServer true makes both
// conditions required (an error if either fails), false skips the proof. Called by prepare once the copied
// columns are known.
func (b *Backfill) chooseSameServer(ctx context.Context) (bool, error) {
	required := b.cfg.SameServer != nil
	if required && !*b.cfg.SameServer {
		b.log.Info("chunks are copied across connections: the same-server path is turned off (--same-server no)")
		return false, nil
	}
	same, err := dbconn.SameServer(ctx, b.src, b.dst)
	unproven := errors.Is(err, dbconn.ErrUnproven)
	switch {
	case err != nil && !unproven:
		return false, fmt.Errorf("backfill: %w", err)
	case !same && required:
		why := "a named lock taken through the source connection is not seen through the target connection"
		if err != nil {
			why = err.Error()
		}
		return false, fmt.Errorf("%w: --same-server yes, but source and target are different servers (%s): the same-server copy would read the target server's own %s; use --same-server auto",
			ErrConfig, why, b.cfg.SourceTable)
	case unproven:
		b.log.Info("source and target are not proven one server: chunks are copied across them", "reason", err)
		return false, nil
	case !same:
		b.log.Info("source and target are different servers: chunks are copied across them",
			"proof", "a named lock taken through the source connection is not seen through the target connection")
		return false, nil
	}
	// One server: the target's user must be able to read what the same-server statements read.
	rows, err := b.dst.QueryContext(ctx, "SELECT "+quoteCols(b.cols)+" FROM "+b.cfg.SourceTable.Quoted()+" LIMIT 0 LOCK IN SHARE MODE")
	if err == nil {
		err = rows.Close()
	}
	var me *mysql.MySQLError
	switch {
	case err == nil:
		return true, nil
	case !errors.As(err, &me):
		return false, fmt.Errorf("backfill: read %s through the target connection: %w", b.cfg.SourceTable, err)
	case required:
		return false, fmt.Errorf("%w: --same-server yes, but the target's user cannot read %s (%v): run GRANT SELECT ON %s TO <the target's user>, or use --same-server auto",
			ErrConfig, b.cfg.SourceTable, err, b.cfg.SourceTable.Quoted())
	}
	b.log.Info("source and target are one server, but the target connection cannot read the source table: chunks are copied across connections",
		"reason", err, "fix", fmt.Sprintf("GRANT SELECT ON %s TO <the target's user> for the faster same-server copy", b.cfg.SourceTable.Quoted()))
	return false, nil
}
