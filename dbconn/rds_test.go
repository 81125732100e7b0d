package dbconn_test

import (
	"database/sql"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
)

// Rows as Amazon RDS for MySQL 8.0 prints them for CALL mysql.rds_show_configuration (values from the RDS
// user guide; no RDS instance can be reached from the test machines).
func TestParseRDSConfiguration(t *testing.T) {
	cols := []string{"name", "value", "description"}
	row := func(name string, value *string, desc string) []sql.NullString {
		v := sql.NullString{}
		if value != nil {
			v = sql.NullString{String: *value, Valid: true}
		}
		return []sql.NullString{{String: name, Valid: true}, v, {String: desc, Valid: true}}
	}
	str := func(s string) *string { return &s }
	others := [][]sql.NullString{
		row("source delay", str("0"), "source delay specifies replication delay in seconds between current instance and its master."),
		row("target delay", str("0"), "target delay specifies replication delay in seconds between current instance and its future read-replica."),
	}
	for _, tc := range []struct {
		name  string
		value *string
		want  int64
	}{
		{"24 hours", str("24"), 24 * 3600},
		{"72 hours", str("72"), 72 * 3600},
		{"NULL, the default: not retained", nil, dbconn.RDSNotRetained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := append([][]sql.NullString{row("binlog retention hours", tc.value,
				"binlog retention hours specifies the duration in hours before binary logs are automatically deleted.")}, others...)
			got, err := dbconn.ParseRDSConfiguration(cols, rows)
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if got, err := dbconn.ParseRDSConfiguration(cols, others); err != nil || got != dbconn.RDSNotRetained {
		t.Fatalf("without the row: got %d, %v; want RDSNotRetained", got, err)
	}
	if _, err := dbconn.ParseRDSConfiguration([]string{"Variable_name", "Value"}, nil); err == nil {
		t.Fatal("unexpected columns were accepted")
	}
}
