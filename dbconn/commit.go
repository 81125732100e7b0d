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
// the driver enforces by closing the connection.
//
// Once the server has answered that COMMIT, the transaction is committed, and Commit returns nil whatever
// follows: Tx.Commit only ends database/sql's transaction (a COMMIT with nothing left to commit), to give the
// connection back. Its error means nothing about the data (the transaction's context ended meanwhile, the
// connection was closed just after the answer, completion_type=RELEASE ended the session), and it is waited
// for only within the same deadline; past it, it ends in the background.
func Commit(ctx context.Context, tx *sql.Tx) error {
	if err := ctx.Err(); err != nil {
		return err // nothing was sent: the transaction rolls back with its connection
	}
	cctx, cancel := context.WithTimeout(ctx, CommitTimeout)
	defer cancel()
	if _, err := tx.ExecContext(cctx, "COMMIT"); err != nil {
		if cctx.Err() != nil {
			return fmt.Errorf("%w (%w): the connection was closed, so whether it committed is read back from what it saved", ErrCommitUnanswered, context.Cause(cctx))
		}
		return err
	}
	released := make(chan struct{})
	go func() {
		_ = tx.Commit()
		close(released)
	}()
	select {
	case <-released:
	case <-cctx.Done():
	}
	return nil
}
