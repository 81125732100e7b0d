package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/replication"
)

// The values of --position: how the stream follows the source's binlog.
const (
	PositionAuto = "auto" // GTIDs where the source has them, file/position otherwise; a checkpoint keeps its mode
	PositionGTID = "gtid" // GTIDs, required
	PositionFile = "file" // binlog file and offset, even where the source has GTIDs
)

// validPosition checks --position before anything connects ("" is auto).
func validPosition(s string) error {
	switch s {
	case "", PositionAuto, PositionGTID, PositionFile:
		return nil
	}
	return fmt.Errorf("%w: --position %q: use %s, %s or %s", ErrUsage, s, PositionAuto, PositionGTID, PositionFile)
}

// hasGTIDs reports whether the source writes GTIDs: MariaDB always does, MySQL with gtid_mode=ON.
func hasGTIDs(si dbconn.ServerInfo) bool {
	return si.Version.Flavor == dbconn.MariaDB || si.GTIDMode == "ON"
}

// looseGTIDs reports whether the source is MariaDB with gtid_strict_mode OFF (MariaDB's default). Its GTID
// positions are compared by sequence number within a domain, which is only an order when strict mode keeps
// sequence numbers ascending in the binlog, so GTID mode refuses such a source (docs/design.md, "MariaDB's
// gtid_strict_mode"); file/position mode does not compare GTIDs and follows it.
func looseGTIDs(si dbconn.ServerInfo) bool {
	return si.Version.Flavor == dbconn.MariaDB && !si.GTIDStrictMode
}

// zeroLogPos reports a source that writes the events inside a transaction with end_log_pos 0: MariaDB 11.4
// and later (MDEV-31273, the binlog checksums computed ahead of the write).
func zeroLogPos(si dbconn.ServerInfo) bool {
	return si.Version.Flavor == dbconn.MariaDB && si.Version.AtLeast(11, 4)
}

// firstMode is the stream's mode for a new checkpoint.
func firstMode(flag string, si dbconn.ServerInfo) (string, error) {
	switch flag {
	case PositionFile:
		return PositionFile, nil
	case PositionGTID:
		if !hasGTIDs(si) {
			return "", fmt.Errorf("--position gtid: the source has gtid_mode=%s: enable GTIDs on it, or use --position auto (file/position where GTIDs are off)", si.GTIDMode)
		}
	}
	if !hasGTIDs(si) {
		return PositionFile, nil
	}
	if looseGTIDs(si) {
		return "", errors.New(preflight.GTIDStrictModeOff)
	}
	return PositionGTID, nil
}

// checkpointMode is the mode a checkpoint was written in.
func checkpointMode(st *checkpoint.State) string {
	if gtid.IsFilePos(st.GTID) {
		return PositionFile
	}
	return PositionGTID
}

// resumeMode is the stream's mode for an existing checkpoint: the one it was written in. --position auto
// follows it; an explicit other mode is refused, in one line, rather than the position being reinterpreted.
func resumeMode(flag string, st *checkpoint.State, si dbconn.ServerInfo, schema string) (string, error) {
	mode := checkpointMode(st)
	if flag != "" && flag != PositionAuto && flag != mode {
		return "", fmt.Errorf("%w: the checkpoint in %s was written in %s mode (position %s) and this run asks for --position %s: pass --position %s (or auto) to resume it, or start over (docs/runbook.md, \"Recover from a purged binlog\")",
			checkpoint.ErrMismatch, schema, mode, st.GTID, flag, mode)
	}
	if mode == PositionGTID && !hasGTIDs(si) {
		return "", fmt.Errorf("%w: the checkpoint in %s follows GTIDs (%s) but the source has gtid_mode=%s: turn GTIDs back on, or start over with --position file",
			checkpoint.ErrMismatch, schema, st.GTID, si.GTIDMode)
	}
	if mode == PositionGTID && looseGTIDs(si) {
		return "", fmt.Errorf("%w: the checkpoint in %s follows GTIDs (%s), and %s", ErrUsage, schema, st.GTID, preflight.GTIDStrictModeOff)
	}
	return mode, nil
}

// fileIdentity names the server a file position belongs to: a position means nothing on any other server.
// MariaDB has no server_uuid; its server_id is what it offers.
func fileIdentity(si dbconn.ServerInfo) string {
	id := "server_id=" + strconv.FormatUint(uint64(si.ServerID), 10)
	if si.ServerUUID != "" {
		id += ",server_uuid=" + si.ServerUUID
	}
	return id
}

// identity is what a new checkpoint of mode records as source_server.
func identity(mode string, si dbconn.ServerInfo) string {
	if mode == PositionFile {
		return fileIdentity(si)
	}
	return sourceIdentity(si)
}

// startPosition is the stream's first position, captured before the backfill reads anything: the source's
// executed GTIDs, or its current binlog file and offset.
func startPosition(ctx context.Context, db *sql.DB, si dbconn.ServerInfo, mode string) (string, error) {
	if mode != PositionFile {
		exec, err := dbconn.ExecutedGTID(ctx, db, si.Version.Flavor)
		if err != nil {
			return "", err
		}
		if g, err := gtid.Parse(string(si.Version.Flavor), exec); err == nil && g.Tagged() {
			return "", fmt.Errorf("%w: the source's executed GTIDs (%s) hold %s", ErrUsage, g, gtid.TaggedUnsupported)
		}
		return exec, nil
	}
	file, pos, err := dbconn.CurrentBinlogPos(ctx, db)
	if err != nil {
		return "", err
	}
	p := gtid.FilePos{File: file, Pos: pos}
	if _, err := gtid.ParseFilePos(p.String()); err != nil {
		return "", fmt.Errorf("the source's binlog position: %w", err)
	}
	return p.String(), nil
}

// checkIdentity compares the source with the one the checkpoint was started on. In GTID mode a change is a
// failover the GTIDs survive, and is logged; in file mode the position belongs to the first server alone.
func checkIdentity(log *slog.Logger, st *checkpoint.State, si dbconn.ServerInfo, mode string) error {
	now := identity(mode, si)
	if st.SourceServer == now {
		return nil
	}
	if mode == PositionFile {
		return fmt.Errorf("%w: %w: the checkpoint's binlog position %s belongs to the source %s, and this source is %s (a failover, or a restored backup?): file positions do not carry over between servers; point --source-dsn at the first server, or start over (with GTIDs on the source, a copy survives failovers)",
			ErrResume, replication.ErrDiverged, st.GTID, st.SourceServer, now)
	}
	log.Warn("the source server changed since the first start (failover?); resuming by GTID", "was", st.SourceServer, "now", now)
	return nil
}

// checkSourceAgain is checkIdentity before a stream session that follows a file position, the first and
// each reconnection: a name behind a VIP or DNS that fails over to another server mid-run must stop the stream,
// as it stops a restart, not stream from the same file name and offset in another server's binlog.
//
// It asks through a connection of its own, made now, as the binlog connection is: the pool's connections may
// still lead to the old server after a DNS name has moved on.
func checkSourceAgain(ctx context.Context, e dbconn.Endpoint, timeout time.Duration, st *checkpoint.State, mode string) error {
	db, _, err := dbconn.Open(ctx, e, dbconn.Options{DialTimeout: timeout, MaxOpenConns: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	si, err := dbconn.Inspect(ctx, db)
	if err != nil {
		return err
	}
	if now := identity(mode, si); st.SourceServer != now {
		return fmt.Errorf("%w: the checkpoint's binlog position belongs to the source %s, and the source now answering is %s (a failover behind the source's address?): file positions do not carry over between servers; point --source-dsn at the first server, or start over (with GTIDs on the source, a copy survives failovers)",
			replication.ErrDiverged, st.SourceServer, now)
	}
	return nil
}

// checkFileResumable is checkResumable for a file position: the file is still on the source and the offset
// lies within it.
func checkFileResumable(ctx context.Context, db *sql.DB, pos *gtid.Set) error {
	p, _ := pos.FilePos()
	files, err := dbconn.BinaryLogs(ctx, db)
	if err != nil {
		return err
	}
	if err := fileOnSource(p, files); err != nil {
		return fmt.Errorf("%w: %w", ErrResume, err)
	}
	return nil
}

// fileOnSource checks a file position against SHOW BINARY LOGS.
func fileOnSource(p gtid.FilePos, files []dbconn.BinlogFile) error {
	if len(files) == 0 {
		return fmt.Errorf("%w: the source lists no binary logs: is log_bin on?", replication.ErrDiverged)
	}
	names, sizes := make([]string, len(files)), make([]uint64, len(files))
	for i, f := range files {
		names[i], sizes[i] = f.Name, f.Size
	}
	oldest, newest := names[0], names[len(names)-1]
	switch gtid.Locate(p, names, sizes) {
	case gtid.FileHeld:
		return nil
	case gtid.FilePastEnd:
		return fmt.Errorf("%w: the checkpoint's position %s lies past the end of %s on the source: this is another server or a restored backup; point --source-dsn at the right server, or start over (docs/runbook.md, \"Recover from a purged binlog\")",
			replication.ErrDiverged, p, p.File)
	case gtid.FilePurged:
		return fmt.Errorf("%w: the source has purged %s, which the checkpoint's position %s needs (its oldest binlog is %s): the missing changes cannot be replayed; start over (docs/runbook.md, \"Recover from a purged binlog\": drop the csmh_sync_* tables in the target schema, delete the target's rows below the id boundary and keep the app's), and raise binlog retention",
			replication.ErrPurged, p.File, p, oldest)
	}
	return fmt.Errorf("%w: the checkpoint's binlog %s is not on the source (it has %s to %s): this is another server or a restored backup; point --source-dsn at the right server, or start over",
		replication.ErrDiverged, p.File, oldest, newest)
}
