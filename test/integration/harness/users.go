package harness

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/preflight"
	"github.com/csmh-sync/csmh-sync/table"
	"github.com/csmh-sync/csmh-sync/verify"
)

// The users csmh-sync connects as in the tests and the demo. LoadEdxSchemaWith creates them holding exactly the
// grants preflight documents (README.md, "Privileges") and nothing else, so a statement that needs more fails a
// test, and so does a documented grant preflight does not accept. They have no password: passwords are another
// concern, tested on users of their own. The tests' own setup and checks connect as root.
const (
	SourceUser = "csmh_src"
	TargetUser = "csmh_dst"
)

// OwnTables are csmh-sync's tables in CSMHE's schema, whose grants the target user holds.
var OwnTables = append(slices.Clone(checkpoint.Tables), verify.Tables...)

// SourceDSN is the DSN csmh-sync's source connections use: SourceUser on this server.
func (s *Server) SourceDSN() string { return s.UserDSN(SourceUser, "", "") }

// TargetDSN is the DSN csmh-sync's target connections use: TargetUser on this server.
func (s *Server) TargetDSN() string { return s.UserDSN(TargetUser, "", "") }

// Setup is the harness tables, with the version v of the servers, as preflight's grant lists take them.
func Setup(v dbconn.Version) preflight.Setup {
	src, _ := table.ParseName(SourceTable)
	dst, _ := table.ParseName(TargetTable)
	return preflight.Setup{SourceTable: src, TargetTable: dst, OwnTables: OwnTables, ProbeTable: checkpoint.ProbeTable, Source: v, Target: v}
}

// GrantSpecs turns grants into CreateUser's form ("SELECT ON `db`.`t`").
func GrantSpecs(gs []preflight.Grant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = strings.Join(g.Privileges, ", ") + " ON " + g.On.String()
	}
	return out
}

// Version reads the server's version.
func (s *Server) Version(ctx context.Context) (dbconn.Version, error) {
	db, err := s.Open("")
	if err != nil {
		return dbconn.Version{}, err
	}
	defer db.Close()
	var v, c string
	if err := db.QueryRowContext(ctx, "SELECT @@version, @@version_comment").Scan(&v, &c); err != nil {
		return dbconn.Version{}, fmt.Errorf("harness: read version: %w", err)
	}
	return dbconn.ParseVersion(v, c)
}

// ToolGrants is what the users get on a server of version v holding the source table (src) and CSMHE (dst):
// SourceUser the source grants, TargetUser the target grants, and on a server holding both the same-server ones.
func ToolGrants(v dbconn.Version, src, dst bool) map[string][]preflight.Grant {
	su := Setup(v)
	out := map[string][]preflight.Grant{}
	if src {
		out[SourceUser] = preflight.SourceGrants(su)
	}
	if dst {
		out[TargetUser] = preflight.TargetGrants(su)
		if src {
			out[TargetUser] = append(out[TargetUser], preflight.SameServerGrants(su)...)
		}
	}
	return out
}

// createToolUsers creates SourceUser and TargetUser as ToolGrants says, outside the binlog (the stream sees only
// the app's changes). It is idempotent.
func (s *Server) createToolUsers(ctx context.Context, src, dst bool) error {
	v, err := s.Version(ctx)
	if err != nil {
		return err
	}
	stmts := []string{"SET sql_log_bin = 0"}
	for user, gs := range ToolGrants(v, src, dst) {
		u := Quote(nullString(user)) + "@'%'"
		stmts = append(stmts, "CREATE USER IF NOT EXISTS "+u)
		for _, g := range GrantSpecs(gs) {
			stmts = append(stmts, "GRANT "+g+" TO "+u)
		}
	}
	return s.Exec(ctx, strings.Join(stmts, ";\n"))
}
