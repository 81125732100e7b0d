package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/csmh-sync/csmh-sync/table"
)

// ErrAutoIncrement means the target's AUTO_INCREMENT has fallen below the checkpoint's id boundary: the app's
// next rows in CSMHE would take ids of the range the copy owns, where the backfill would keep the app's row
// instead of the source's and the stream would overwrite it.
//
// InnoDB before MySQL 8.0 keeps the counter in memory only and sets it to max(id)+1 when the server
// restarts ("InnoDB AUTO_INCREMENT Counter Initialization",
// https://dev.mysql.com/doc/refman/8.0/en/innodb-auto-increment-handling.html: "In MySQL 5.7 and earlier,
// the auto-increment counter is stored in main memory, not on disk"; MariaDB before 10.2.4 alike). A MySQL
// 5.7 target restarted before the app wrote its first CSMHE row thus has an AUTO_INCREMENT just above the
// rows copied so far, far below the boundary. An ALTER TABLE … AUTO_INCREMENT = 1 does the same on any
// version (InnoDB raises the value to max(id)+1).
var ErrAutoIncrement = errors.New("target AUTO_INCREMENT below the id boundary")

// AutoIncrementBelow returns the ErrAutoIncrement stop, with its fix, when the target's next AUTO_INCREMENT
// value ai is below boundary, and nil otherwise. ai 0 (unknown, or no AUTO_INCREMENT column) and boundary 0
// (no guard) are not compared. Once the app has written rows at or above the boundary, InnoDB keeps the
// counter above them whatever happens, so only ai < boundary is a danger.
func AutoIncrementBelow(target table.Name, ai, boundary uint64) error {
	if ai == 0 || boundary == 0 || ai >= boundary {
		return nil
	}
	return fmt.Errorf("%w: %s has AUTO_INCREMENT %d, below the checkpoint's id boundary %d, so the app's next rows would take ids of the copied range (MySQL 5.7 resets AUTO_INCREMENT to max(id)+1 on a restart): run ALTER TABLE %s AUTO_INCREMENT = %d on the target now, then restart; rows the app wrote meanwhile with ids from %d up show as differences in 'csmh-sync verify' (docs/runbook.md, \"AUTO_INCREMENT below the id boundary\")",
		ErrAutoIncrement, target, ai, boundary, target.Quoted(), boundary, ai)
}

// CheckAutoIncrement compares the target table's AUTO_INCREMENT, read live (table.Status, uncached on MySQL
// 8 too), with the checkpoint's id boundary: AutoIncrementBelow's stop, ErrNone without a checkpoint, or a
// read error. It reads the boundary first: cutover --bump-auto-increment raises the AUTO_INCREMENT before
// the boundary, so in this order a raise in between is never mistaken for a fall.
func (s *Store) CheckAutoIncrement(ctx context.Context, target table.Name) (ai, boundary uint64, err error) {
	if boundary, err = s.IDBoundary(ctx); err != nil {
		return 0, 0, err
	}
	if _, ai, err = table.Status(ctx, s.db, target); err != nil {
		return 0, boundary, err
	}
	return ai, boundary, AutoIncrementBelow(target, ai, boundary)
}
