package dbconn_test

import (
	"database/sql"
	"os"
	"testing"

	"github.com/csmh-sync/csmh-sync/dbconn"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

func openPool(t *testing.T, s *harness.Server, maxConns int) *sql.DB {
	t.Helper()
	db, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(maxConns)
	t.Cleanup(func() { db.Close() })
	return db
}

// Two pools on one server are proven one server, in either order and through one pool; pools on two servers
// are not. No proof leaves its lock behind.
func TestSameServer(t *testing.T) {
	ctx := t.Context()
	// metadata_lock_info lists the user locks a server holds (information_schema.METADATA_LOCK_INFO).
	one := harness.StartT(t, harness.Options{ExtraArgs: []string{"--plugin-load-add=metadata_lock_info"}})
	two := harness.StartT(t, harness.Options{})
	a, b, c := openPool(t, one, 1), openPool(t, one, 1), openPool(t, two, 1)
	shared := openPool(t, one, 2)
	for _, tc := range []struct {
		name string
		x, y *sql.DB
		want bool
	}{
		{"two pools on one server", a, b, true},
		{"the other way round", b, a, true},
		{"one pool", shared, shared, true},
		{"two servers", a, c, false},
		{"two servers, the other way round", c, a, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dbconn.SameServer(ctx, tc.x, tc.y)
			if err != nil || got != tc.want {
				t.Fatalf("SameServer = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	var locks int
	if err := a.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.METADATA_LOCK_INFO
		WHERE LOCK_TYPE = 'User lock' AND TABLE_SCHEMA LIKE 'csmh-sync-identity:%'`).Scan(&locks); err != nil {
		t.Fatal(err)
	}
	if locks != 0 {
		t.Fatalf("%d identity locks still held after the proofs", locks)
	}
}
