package harness

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
)

// The tables the tests migrate.
const (
	SourceTable = "edxapp.courseware_studentmodulehistory"
	TargetTable = "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended"
)

//go:embed testdata/edx-schema.sql
var schemaSQL string

// SchemaOptions select which tables LoadEdxSchemaWith creates.
type SchemaOptions struct {
	SkipSource       bool
	SkipTarget       bool
	Legacy2016Target bool // CSMHE as 2016 installs have it: student_module_id int(11)
	// TargetAutoIncrement sets CSMHE's AUTO_INCREMENT (max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET in edX);
	// 0 leaves it at 1.
	TargetAutoIncrement uint64
}

// schemaPart returns the statements under the "-- name" header of the embedded file.
func schemaPart(name string) string {
	parts := strings.Split(schemaSQL, "\n-- ")
	for _, p := range parts {
		if strings.HasPrefix(p, name+"\n") {
			return strings.TrimPrefix(p, name+"\n")
		}
	}
	return ""
}

// LoadEdxSchema creates both databases and both current tables.
func (s *Server) LoadEdxSchema(ctx context.Context) error {
	return s.LoadEdxSchemaWith(ctx, SchemaOptions{})
}

// LoadEdxSchemaWith creates the databases and the chosen tables.
func (s *Server) LoadEdxSchemaWith(ctx context.Context, o SchemaOptions) error {
	stmts := []string{"CREATE DATABASE IF NOT EXISTS edxapp DEFAULT CHARACTER SET utf8mb4",
		"CREATE DATABASE IF NOT EXISTS edxapp_csmh DEFAULT CHARACTER SET utf8mb4"}
	if !o.SkipSource {
		stmts = append(stmts, schemaPart("source"))
	}
	if !o.SkipTarget {
		if o.Legacy2016Target {
			stmts = append(stmts, schemaPart("target2016"))
		} else {
			stmts = append(stmts, schemaPart("target"))
		}
		if o.TargetAutoIncrement > 0 {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s AUTO_INCREMENT = %d", TargetTable, o.TargetAutoIncrement))
		}
	}
	for _, q := range stmts {
		if err := s.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// Exec runs one statement as root.
func (s *Server) Exec(ctx context.Context, q string, args ...any) error {
	db, err := s.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("%.80s: %w", q, err)
	}
	return nil
}

// CreateUser creates a user with a password and the given grants, e.g. "SELECT ON edxapp.*".
func (s *Server) CreateUser(ctx context.Context, user, pass string, grants ...string) error {
	if err := s.Exec(ctx, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, pass)); err != nil {
		return err
	}
	for _, g := range grants {
		if err := s.Exec(ctx, fmt.Sprintf("GRANT %s TO '%s'@'%%'", g, user)); err != nil {
			return err
		}
	}
	return nil
}
