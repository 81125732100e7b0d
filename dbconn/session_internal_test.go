package dbconn

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"strings"
	"testing"
)

// compareSession accepts what Pin set (sql_mode in any order and case) and names the first setting that differs.
func TestCompareSession(t *testing.T) {
	ok := []string{"NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION", "+00:00", "utf8mb4", "utf8mb4", "utf8mb4", "1"}
	if err := compareSession(ok[0], ok[1], ok[2], ok[3], ok[4], ok[5]); err != nil {
		t.Fatalf("the pinned settings: %v", err)
	}
	for i, tc := range []struct{ value, name string }{
		{"STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,NO_BACKSLASH_ESCAPES", "sql_mode"},
		{"SYSTEM", "time_zone"},
		{"latin1", "character_set_client"},
		{"latin1", "character_set_connection"},
		{"binary", "character_set_results"},
		{"0", "autocommit"},
	} {
		v := append([]string(nil), ok...)
		v[i] = tc.value
		err := compareSession(v[0], v[1], v[2], v[3], v[4], v[5])
		if !errors.Is(err, ErrSession) || !strings.Contains(err.Error(), "session's "+tc.name+" is ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s = %q: %v, want one line naming it", tc.name, tc.value, err)
		}
	}
}

// A connection whose session differs is closed and never handed to the pool.
func TestCheckingConnectorRefusesChangedSession(t *testing.T) {
	fc := &fakeConn{row: []driver.Value{[]byte("STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"), []byte("+00:00"),
		[]byte("latin1"), []byte("utf8mb4"), []byte("utf8mb4"), int64(1)}}
	c := checkingConnector{fakeConnector{fc}}
	conn, err := c.Connect(context.Background())
	if conn != nil || !errors.Is(err, ErrSession) || !strings.Contains(err.Error(), "character_set_client") || !fc.closed {
		t.Fatalf("Connect() = %v, %v (closed %v): want ErrSession naming character_set_client and the connection closed", conn, err, fc.closed)
	}
	fc.row[2], fc.closed = []byte("utf8mb4"), false
	if conn, err = c.Connect(context.Background()); err != nil || conn != fc || fc.closed {
		t.Fatalf("Connect() of a pinned session = %v, %v", conn, err)
	}
}

type fakeConnector struct{ c *fakeConn }

func (f fakeConnector) Connect(context.Context) (driver.Conn, error) { return f.c, nil }
func (f fakeConnector) Driver() driver.Driver                        { return nil }

type fakeConn struct {
	row    []driver.Value
	closed bool
}

func (c *fakeConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (c *fakeConn) Close() error                        { c.closed = true; return nil }
func (c *fakeConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }
func (c *fakeConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return &fakeRows{row: c.row}, nil
}

type fakeRows struct {
	row  []driver.Value
	done bool
}

func (r *fakeRows) Columns() []string { return make([]string, len(r.row)) }
func (r *fakeRows) Close() error      { return nil }
func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	copy(dest, r.row)
	return nil
}
