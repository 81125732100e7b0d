// Package replication tails the source's binlog and applies the source table's inserts, updates and deletes
// to the target table.
//
// Flow of one change: a streamer goroutine reads binlog events (go-mysql BinlogSyncer, GTID positions),
// assembles whole source transactions and hands them over a bounded channel to the applier, which groups
// several of them into ONE target transaction that also writes the new GTID position to the checkpoint.
// The position therefore only ever advances at a source transaction boundary and always together with the
// rows it covers: after any crash the stream resumes from the last committed position, and replaying a
// transaction is harmless because every change is applied as an upsert or delete by primary key.
//
// Definitive stops (purged binlog, DDL on the source table, a source id in the app's id range) commit what
// came before and return a sentinel error whose message tells the operator what to do. Everything else —
// a restarted source, a lost connection, a lock-wait timeout or deadlock on the target — reconnects with
// backoff from the last committed position.
package replication
