package checkpoint

import (
	"errors"

	"github.com/go-sql-driver/mysql"
)

func containsCode(err error, code uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == code
}
