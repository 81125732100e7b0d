package checkpoint_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/csmh-sync/csmh-sync/checkpoint"
	"github.com/csmh-sync/csmh-sync/table"
)

// Only an AUTO_INCREMENT below the boundary is a stop, and its message names the ALTER that fixes it. The
// figures are what a MySQL 5.7 restart does ("InnoDB AUTO_INCREMENT Counter Initialization",
// https://dev.mysql.com/doc/refman/8.0/en/innodb-auto-increment-handling.html): CSMHE created with
// AUTO_INCREMENT = max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET (1,003,426,362 + 10,000), the copy
// at id 412,000,000 when the server restarts, the counter then max(id)+1.
func TestAutoIncrementBelow(t *testing.T) {
	target := table.Name{Schema: "edxapp_csmh", Table: "coursewarehistoryextended_studentmodulehistoryextended"}
	const boundary = 1_003_426_362 + 10_000
	for _, c := range []struct {
		ai   uint64
		stop bool
	}{
		{412_000_001, true},   // restarted mid-copy: max(copied id) + 1
		{1, true},             // restarted (or ALTER … AUTO_INCREMENT = 1) before the first copied row
		{boundary - 1, true},  // one id inside the copied range
		{boundary, false},     // the app's next row is the boundary itself
		{boundary + 5, false}, // the app has written rows above it: InnoDB keeps the counter above them
		{0, false},            // unknown (no AUTO_INCREMENT column)
	} {
		err := checkpoint.AutoIncrementBelow(target, c.ai, boundary)
		if (err != nil) != c.stop || (err != nil && !errors.Is(err, checkpoint.ErrAutoIncrement)) {
			t.Fatalf("AutoIncrementBelow(%d, %d) = %v, want a stop: %v", c.ai, uint64(boundary), err, c.stop)
		}
		if err == nil {
			continue
		}
		msg := err.Error()
		fix := "ALTER TABLE `edxapp_csmh`.`coursewarehistoryextended_studentmodulehistoryextended` AUTO_INCREMENT = 1003436362"
		if !strings.Contains(msg, fix) || strings.Contains(msg, "\n") {
			t.Errorf("stop %q: want one line naming %q", msg, fix)
		}
	}
	if err := checkpoint.AutoIncrementBelow(target, 5, 0); err != nil {
		t.Errorf("no boundary (0): %v, want no stop", err)
	}
}
