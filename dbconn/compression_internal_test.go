package dbconn

import (
	"errors"
	"strings"
	"testing"
)

// The values SHOW GLOBAL VARIABLES LIKE 'binlog_transaction_compression' shows on MySQL 8.0.20+ ("OFF" by
// default, "ON"; https://dev.mysql.com/doc/refman/8.4/en/replication-options-binary-log.html#sysvar_binlog_transaction_compression),
// and none on MariaDB or MySQL 5.7, which have no such variable.
func TestBinlogCompression(t *testing.T) {
	for _, v := range []string{"OFF", "", "0"} {
		if err := binlogCompression(v); err != nil {
			t.Errorf("binlog_transaction_compression %q: %v, want no refusal", v, err)
		}
	}
	for _, v := range []string{"ON", "1"} {
		err := binlogCompression(v)
		if !errors.Is(err, ErrBinlogCompression) || !strings.Contains(err.Error(), "SET GLOBAL binlog_transaction_compression=OFF") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("binlog_transaction_compression %q: %v, want one line naming SET GLOBAL binlog_transaction_compression=OFF", v, err)
		}
	}
}
