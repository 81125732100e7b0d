package dbconn

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// CommitTimeout bounds how long Commit waits for the server's answer to a COMMIT.
const CommitTimeout = 30 * time.Second

// ErrCommitUnanswered: a COMMIT got no answer within its deadline and its connection was closed. Whether the
// transaction committed is unknown here; what was saved in it (a checkpoint) says, once read back. IsTransient
// reports it so.
var ErrCommitUnanswered = errors.New("commit unanswered")

// Commit commits tx, waiting for the server's answer until ctx ends or CommitTimeout passes, whichever comes
// first. database/sql's Tx.Commit takes no context, and go-sql-driver's then waits as long as the connection
// lives: for ever on a server that hangs with its TCP stack still up (a stopped process, a stalled disk), and
// a process told to stop would wait with it. Here the COMMIT is sent as a statement under the deadline, which
// the driver enforces by closing the connection; Tx.Commit then ends database/sql's transaction (a COMMIT
// with nothing left to commit, on the same connection).
func Commit(ctx context.Context, tx *sql.Tx) error {
	cctx, cancel := context.WithTimeout(ctx, CommitTimeout)
	defer cancel()
	if _, err := tx.ExecContext(cctx, "COMMIT"); err != nil {
		if cctx.Err() != nil {
			return fmt.Errorf("%w (%w): the connection was closed, so whether it committed is read back from what it saved", ErrCommitUnanswered, context.Cause(cctx))
		}
		return err
	}
	return tx.Commit()
}
