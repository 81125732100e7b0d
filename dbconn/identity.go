package dbconn

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
)

// ErrUnproven means a server refused the named-lock functions SameServer proves with (as a Galera node may),
// so whether two pools reach one server is unknown. Callers treat it as "different servers".
var ErrUnproven = errors.New("cannot prove one server")

// SameServer reports whether pools a and b reach one server process. It is proven, not inferred from
// configuration: @@server_id, @@hostname, @@port and @@datadir are the same on every server deployed from one
// chart or image. A named lock with a random name is taken on one connection of a, and b must see that very
// connection holding it (IS_USED_LOCK names the holder's connection id). Lock names are global to a server on
// MySQL and MariaDB alike, a random one is held by nobody else, and a lock ends with its session, so a holder
// seen through b can only be a's connection. A replica, a proxy to another node or a lookalike server sees no
// holder. The lock is released before SameServer returns (or its connection closed, which releases it).
//
// Each pool must be able to open one connection while the other holds one; a and b may be the same pool if it
// allows two. Errors are ErrUnproven (wrapped) or errors reaching the servers.
func SameServer(ctx context.Context, a, b *sql.DB) (bool, error) {
	// 128 random bits (crypto/rand's Read never fails); the name has 51 characters, MySQL allows 64.
	var r [16]byte
	_, _ = rand.Read(r[:])
	name := "csmh-sync-identity:" + hex.EncodeToString(r[:])

	conn, err := a.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("identify the source server: %w", err)
	}
	var got sql.NullInt64
	var id uint64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0), CONNECTION_ID()", name).Scan(&got, &id); err != nil {
		discard(conn)
		if isServerError(err) {
			return false, fmt.Errorf("%w: the source refused GET_LOCK: %w", ErrUnproven, err)
		}
		return false, fmt.Errorf("identify the source server: %w", err)
	}
	defer func() {
		var released sql.NullInt64
		if rerr := conn.QueryRowContext(ctx, "SELECT RELEASE_LOCK(?)", name).Scan(&released); rerr != nil || released.Int64 != 1 {
			discard(conn) // closing the session releases the lock
			return
		}
		conn.Close()
	}()
	if got.Int64 != 1 {
		return false, fmt.Errorf("%w: the source did not grant a fresh named lock (GET_LOCK returned %v)", ErrUnproven, got)
	}
	var holder sql.NullInt64
	if err := b.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", name).Scan(&holder); err != nil {
		if isServerError(err) {
			return false, fmt.Errorf("%w: the target refused IS_USED_LOCK: %w", ErrUnproven, err)
		}
		return false, fmt.Errorf("identify the target server: %w", err)
	}
	return holder.Valid && uint64(holder.Int64) == id, nil
}

// discard closes c and drops its session instead of returning it to the pool.
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	c.Close()
}

// isServerError reports whether the server answered err (as opposed to a connection or context failure).
func isServerError(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me)
}
