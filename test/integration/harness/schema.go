package harness

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
)

// The tables csmh-sync migrates, as database.table.
const (
	SourceTable = "edxapp.courseware_studentmodulehistory"
	TargetTable = "edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended"
)

//go:embed testdata/edx-schema.sql
var schemaSQL string

// SchemaOptions select what LoadEdxSchemaWith creates. Both databases are always created.
type SchemaOptions struct {
	SkipSource       bool // no CSMH (a target-only server)
	SkipTarget       bool // no CSMHE (a source-only server)
	Legacy2016Target bool // CSMHE as 2016 installs have it: created datetime, student_module_id int(11)
	// TargetAutoIncrement sets CSMHE's AUTO_INCREMENT, which edX sets to max(CSMH.id) +
	// STUDENTMODULEHISTORYEXTENDED_OFFSET; 0 leaves it at 1.
	TargetAutoIncrement uint64
}

// schemaStatements returns the statements of the "-- name: <section>" section of the embedded file,
// without comment lines.
func schemaStatements(section string) ([]string, error) {
	var body []string
	in := false
	for line := range strings.Lines(schemaSQL) {
		if name, ok := strings.CutPrefix(line, "-- name: "); ok {
			in = strings.TrimSpace(name) == section
			continue
		}
		if in && !strings.HasPrefix(line, "--") {
			body = append(body, line)
		}
	}
	var out []string
	for stmt := range strings.SplitSeq(strings.Join(body, ""), ";\n") {
		if stmt = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(stmt), ";")); stmt != "" {
			out = append(out, stmt)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("harness: schema section %q missing from testdata/edx-schema.sql", section)
	}
	return out, nil
}

// LoadEdxSchema creates edxapp and edxapp_csmh with the current CSMH and CSMHE.
func (s *Server) LoadEdxSchema(ctx context.Context) error {
	return s.LoadEdxSchemaWith(ctx, SchemaOptions{})
}

// LoadEdxSchemaWith creates both databases and the tables o selects, and the users csmh-sync connects as
// (SourceUser where the source table is, TargetUser where CSMHE is).
func (s *Server) LoadEdxSchemaWith(ctx context.Context, o SchemaOptions) error {
	sections := []string{"databases"}
	if !o.SkipSource {
		sections = append(sections, "source")
	}
	if !o.SkipTarget {
		if o.Legacy2016Target {
			sections = append(sections, "target2016")
		} else {
			sections = append(sections, "target")
		}
	}
	var stmts []string
	for _, sec := range sections {
		st, err := schemaStatements(sec)
		if err != nil {
			return err
		}
		stmts = append(stmts, st...)
	}
	if !o.SkipTarget && o.TargetAutoIncrement > 0 {
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s AUTO_INCREMENT = %d", TargetTable, o.TargetAutoIncrement))
	}
	for _, q := range stmts {
		if err := s.Exec(ctx, q); err != nil {
			return fmt.Errorf("harness: load edX schema: %w", err)
		}
	}
	return s.createToolUsers(ctx, !o.SkipSource, !o.SkipTarget)
}

// Exec runs one statement (or several, separated by semicolons) as root with no default database.
func (s *Server) Exec(ctx context.Context, q string, args ...any) error {
	db, err := s.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("harness: %.100s: %w", q, err)
	}
	return nil
}

// CreateUser creates user@'%' with password pass and grants each of grants, written as GRANT takes them
// before TO, e.g. "REPLICATION SLAVE, REPLICATION CLIENT ON *.*" or "SELECT ON edxapp.*".
func (s *Server) CreateUser(ctx context.Context, user, pass string, grants ...string) error {
	u := Quote(nullString(user)) + "@'%'"
	if err := s.Exec(ctx, "CREATE USER "+u+" IDENTIFIED BY "+Quote(nullString(pass))); err != nil {
		return err
	}
	for _, g := range grants {
		if err := s.Exec(ctx, "GRANT "+g+" TO "+u); err != nil {
			return err
		}
	}
	return nil
}
