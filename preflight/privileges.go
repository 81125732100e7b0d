package preflight

import (
	"strings"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/table"
)

// The grants below are the whole list of what csmh-sync's users need, derived from the statements the code runs.
// README.md and docs/runbook.md print them for the default tables (a unit test keeps them equal), preflight checks
// them and prints the missing ones with the configured names, and the integration tests and the demo connect as
// users that hold exactly these and nothing else.
//
// Nothing else is needed: GET_LOCK / IS_USED_LOCK / RELEASE_LOCK (the migration lock and the same-server proof),
// KILL of the user's own stale session, SHOW GLOBAL VARIABLES / STATUS, @@gtid_* and information_schema rows of
// tables the user holds a privilege on need no grant. MySQL's @@gtid_purged and @@gtid_executed are variables,
// so a MySQL source needs no REPLICATION CLIENT.

// Object is what a grant applies to: every database (both fields empty), one database (Table empty), or one table.
type Object struct{ DB, Table string }

// String is the object as GRANT takes it, quoted: *.*, `db`.*, `db`.`table`.
func (o Object) String() string {
	switch {
	case o.DB == "":
		return "*.*"
	case o.Table == "":
		return table.QuoteIdent(o.DB) + ".*"
	}
	return table.QuoteIdent(o.DB) + "." + table.QuoteIdent(o.Table)
}

func tableObject(n table.Name) Object { return Object{DB: n.Schema, Table: n.Table} }

// Grant is one GRANT statement a csmh-sync user needs.
type Grant struct {
	Privileges []string // as GRANT spells them
	On         Object
	// Optional names the feature that needs the grant when csmh-sync runs without it (preflight warns); empty
	// means every run needs it (preflight fails).
	Optional string
	Why      string
}

// Statement is the GRANT statement giving g to user (e.g. 'csmh'@'%').
func (g Grant) Statement(user string) string {
	return "GRANT " + strings.Join(g.Privileges, ", ") + " ON " + g.On.String() + " TO " + user
}

// Setup is what the grants depend on. A zero Version stands for MariaDB 10.5 or later.
type Setup struct {
	SourceTable, TargetTable table.Name
	OwnTables                []string // csmh-sync's own tables, in the target table's schema
	ProbeTable               string   // the latency guard's table there, whose grant is optional; "" = none
	Source, Target           dbconn.Version
	// FilePositions: the stream follows binlog file and offset (a MySQL source without GTIDs, --position auto).
	FilePositions bool
}

func isMariaDB(v dbconn.Version) bool { return v.Flavor == "" || v.Flavor == dbconn.MariaDB }

// atLeast is Version.AtLeast down to the patch level; a zero Version is recent.
func atLeast(v dbconn.Version, major, minor, patch int) bool {
	if v.Flavor == "" {
		return true
	}
	if v.Major != major || v.Minor != minor {
		return v.AtLeast(major, minor)
	}
	return v.Patch >= patch
}

// lockingReadsNeedLockTables reports MySQL 8.0.0–8.0.21, where SELECT … LOCK IN SHARE MODE (FOR SHARE) needs SELECT
// and one of UPDATE, DELETE or LOCK TABLES. Aurora MySQL 3 is 8.0.23 and later, whatever its version string says.
func lockingReadsNeedLockTables(v dbconn.Version) bool {
	return v.Flavor == dbconn.MySQL && v.Major == 8 && v.Minor == 0 && v.Patch < 22 &&
		!strings.Contains(strings.ToLower(v.Raw), "aurora")
}

// SourceGrants is what the source user needs.
func SourceGrants(s Setup) []Grant {
	gs := []Grant{{Privileges: []string{"REPLICATION SLAVE"}, On: Object{},
		Why: "the binlog stream (register as a replica, dump the binlog by GTID)"}}
	if isMariaDB(s.Source) {
		name := "BINLOG MONITOR"
		if !s.Source.AtLeast(10, 5) && s.Source.Flavor != "" {
			name = "REPLICATION CLIENT" // the same privilege's name before 10.5
		}
		gs = append(gs, Grant{Privileges: []string{name}, On: Object{},
			Why: "SHOW BINARY LOGS and SHOW BINLOG EVENTS: the GTIDs the source has purged (MariaDB has no @@gtid_purged)"})
	}
	if !isMariaDB(s.Source) && s.FilePositions {
		gs = append(gs, Grant{Privileges: []string{"REPLICATION CLIENT"}, On: Object{},
			Why: "file/position mode: SHOW BINARY LOG STATUS (SHOW MASTER STATUS) for the start position and the catch-up barriers, SHOW BINARY LOGS for the resume checks and the lag"})
	}
	gs = append(gs, Grant{Privileges: []string{"SELECT"}, On: tableObject(s.SourceTable),
		Why: "the backfill's chunk reads, verify, preflight's and the first start's id checks"})
	if lockingReadsNeedLockTables(s.Source) {
		gs = append(gs, Grant{Privileges: []string{"LOCK TABLES"}, On: Object{DB: s.SourceTable.Schema},
			Why: "MySQL before 8.0.22 wants it (or UPDATE or DELETE) for the backfill's locking reads; it exists only per database, writes nothing and locks only tables the user may read"})
	}
	return gs
}

// TargetGrants is what the target user needs.
func TargetGrants(s Setup) []Grant {
	alter := []string{"ALTER"}
	if s.Target.Flavor == dbconn.MySQL {
		alter = append(alter, "CREATE") // MySQL's ALTER TABLE checks ALTER, CREATE and INSERT on the table
	}
	gs := []Grant{
		{Privileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE"}, On: tableObject(s.TargetTable),
			Why: "copied and streamed rows (INSERT IGNORE, LOAD DATA LOCAL, upserts, deletes), verify and verify --repair"},
		{Privileges: alter, On: tableObject(s.TargetTable), Optional: "cutover --bump-auto-increment",
			Why: "cutover --bump-auto-increment raises CSMHE's AUTO_INCREMENT (ALTER TABLE … AUTO_INCREMENT)"},
	}
	for _, t := range s.OwnTables {
		gs = append(gs, Grant{Privileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"},
			On: Object{DB: s.TargetTable.Schema, Table: t}, Why: "csmh-sync's own table, created at the first start"})
	}
	if s.ProbeTable != "" {
		gs = append(gs, Grant{Privileges: []string{"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"},
			On: Object{DB: s.TargetTable.Schema, Table: s.ProbeTable}, Optional: "the backfill's latency guard (--max-latency-rise)",
			Why: "the latency guard times a one-row commit on the target every 100 ms"})
	}
	return gs
}

// SameServerGrants is what the target user needs besides TargetGrants for the same-server copy (INSERT … SELECT
// on one server); without it the backfill copies across connections.
func SameServerGrants(s Setup) []Grant {
	const feature = "the same-server copy"
	gs := []Grant{{Privileges: []string{"SELECT"}, On: tableObject(s.SourceTable), Optional: feature,
		Why: "INSERT … SELECT reads the source table through the target's connection"}}
	if lockingReadsNeedLockTables(s.Target) {
		gs = append(gs, Grant{Privileges: []string{"LOCK TABLES"}, On: Object{DB: s.SourceTable.Schema}, Optional: feature,
			Why: "MySQL before 8.0.22: the copy's locking read of the source table"})
	}
	return gs
}

// ReplicaGrants is what the --replica-dsn user needs on a replica of version v: SHOW REPLICA STATUS (SHOW SLAVE
// STATUS), for the lag the backfill throttles on.
func ReplicaGrants(v dbconn.Version) []Grant {
	name := "REPLICATION CLIENT"
	if isMariaDB(v) {
		switch {
		case atLeast(v, 10, 5, 9):
			name = "SLAVE MONITOR"
		case v.AtLeast(10, 5):
			name = "REPLICATION SLAVE ADMIN" // 10.5.2–10.5.8
		}
	}
	return []Grant{{Privileges: []string{name}, On: Object{}, Why: "SHOW REPLICA STATUS: the replica's lag"}}
}

// RDSGrant is what the source user needs on Amazon RDS and Aurora MySQL to read the binlog retention: without it
// preflight warns and csmh_sync_binlog_retention_headroom_seconds stays empty.
const RDSGrant = "GRANT EXECUTE ON PROCEDURE mysql.rds_show_configuration"
