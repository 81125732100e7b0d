// Package verify says whether the target table holds exactly the source table's rows in the migrated id
// range, so that reads can be switched to the target alone. It only reads the tables (unless asked to
// repair) and writes its own ledger in the target schema.
//
// The range is cut into chunks of about ChunkRows source rows along the primary key. Each chunk is compared
// on both servers at once, in one of three modes: row counts; counts and aggregates of 64-bit per-row
// digests (checksum, the default; CRC-32 and CRC-32C on MariaDB 10.8+, else MD5), drilled down by bisection
// to the differing ids; or every row's normalized values
// streamed from both sides and merged in id order. Values are normalized by column NAME so that column order,
// int vs bigint unsigned, datetime vs datetime(6) and utf8 vs utf8mb4 do not count as differences.
//
// Replication may run meanwhile: verify waits for the target to catch up (CatchUp) at the start and again
// before it reports a chunk or an id as different, and compares again. A ledger of compared chunks, with a
// touch counter that the replication applier bumps in its own transactions (MarkTouched), lets an
// incremental run re-check only the chunks changed since they were found equal.
package verify
