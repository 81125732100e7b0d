package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/csmh-sync/csmh-sync/gtid"
	"github.com/csmh-sync/csmh-sync/table"
)

// session is one binlog connection: it streams from pos until an error or ctx ends. On ctx end it commits the
// batch of complete transactions it holds, so a SIGTERM loses nothing and redoes nothing.
func (r *Replicator) session(ctx context.Context, pos *gtid.Set) error {
	src, err := table.Load(ctx, r.src, r.cfg.SourceTable)
	if err != nil {
		return fmt.Errorf("load source table: %w", err)
	}
	dst, err := table.Load(ctx, r.dst, r.cfg.TargetTable)
	if err != nil {
		return fmt.Errorf("load target table: %w", err)
	}
	ap, err := newApplier(r, src, dst)
	if err != nil {
		return err
	}
	if err := r.checkPurged(ctx, pos); err != nil {
		return err
	}
	syncer := replication.NewBinlogSyncer(r.syncerConfig())
	defer syncer.Close()
	stream, err := syncer.StartSyncGTID(pos.GoMySQL())
	if err != nil {
		return classify(err)
	}
	r.connected.Store(true)
	r.m.Connected.Set(1)
	r.touch()
	r.log.Info("binlog stream connected", "from", pos.String())

	b := newBatch(pos)
	var cur *txn
	for {
		wait := time.Hour
		if b.pending() {
			wait = max(time.Until(b.deadline(r.cfg.BatchDelay)), 0)
		}
		ectx, cancel := context.WithTimeout(ctx, wait)
		ev, err := stream.GetEvent(ectx)
		cancel()
		if ctx.Err() != nil {
			// Stopping: commit the complete transactions held; the partial one is re-read next time.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return ap.flush(fctx, b)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			if err := ap.flush(ctx, b); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return classify(err)
		}
		r.touch()
		switch e := ev.Event.(type) {
		case *replication.MariadbGTIDEvent:
			cur = &txn{gtid: fmt.Sprintf("%d-%d-%d", e.GTID.DomainID, e.GTID.ServerID, e.GTID.SequenceNumber)}
		case *replication.GTIDEvent:
			cur = &txn{gtid: mysqlGTID(e.SID, e.GNO)}
		case *replication.RowsEvent:
			if cur == nil || !r.isSource(e.Table) {
				continue
			}
			if err := ap.collect(cur, ev.Header.EventType, e); err != nil {
				if ferr := ap.flush(ctx, b); ferr != nil {
					return errors.Join(err, ferr)
				}
				return err
			}
		case *replication.QueryEvent:
			q := string(e.Query)
			switch strings.ToUpper(strings.TrimSpace(q)) {
			case "BEGIN", "XA START", "SAVEPOINT":
				continue
			case "COMMIT":
				cur = r.endTxn(b, cur, ev.Header.Timestamp)
			default:
				if touchesTable(q, string(e.Schema), r.cfg.SourceTable) {
					ferr := ap.flush(ctx, b)
					return errors.Join(fmt.Errorf("%w (%.200s): the copy stopped at the transaction before it; adapt the target table, run 'csmh-sync preflight', then start again",
						ErrDDL, q), ferr)
				}
				cur = r.endTxn(b, cur, ev.Header.Timestamp)
			}
		case *replication.XIDEvent:
			cur = r.endTxn(b, cur, ev.Header.Timestamp)
		}
		if b.full(r.cfg.BatchRows) {
			if err := ap.flush(ctx, b); err != nil {
				return err
			}
		}
	}
}

func (r *Replicator) endTxn(b *batch, t *txn, ts uint32) *txn {
	if t == nil {
		return nil
	}
	t.commitTS = time.Unix(int64(ts), 0)
	b.add(t)
	r.m.SourceWrites.Inc()
	r.updateLag(b)
	return nil
}

func (r *Replicator) touch() { r.lastContact.Store(time.Now().UnixNano()) }

func (r *Replicator) updateLag(b *batch) {
	if t := b.oldest(); !t.IsZero() {
		lag := max(time.Since(t), 0)
		r.lagNanos.Store(int64(lag))
		r.m.Lag.Set(lag.Seconds())
		return
	}
	r.lagNanos.Store(0)
	r.m.Lag.Set(0)
}

func (r *Replicator) isSource(t *replication.TableMapEvent) bool {
	return t != nil && string(t.Schema) == r.cfg.SourceTable.Schema && string(t.Table) == r.cfg.SourceTable.Table
}

func (r *Replicator) syncerConfig() replication.BinlogSyncerConfig {
	host, port := splitAddr(r.cfg.Source.Addr)
	schema, tbl := []byte(r.cfg.SourceTable.Schema), []byte(r.cfg.SourceTable.Table)
	return replication.BinlogSyncerConfig{
		ServerID: r.cfg.ServerID, Flavor: r.cfg.Flavor, Host: host, Port: port,
		User: r.cfg.Source.User, Password: r.cfg.Source.Passwd, Logger: r.log.With("component", "binlog-syncer"),
		HeartbeatPeriod: r.cfg.Heartbeat, ReadTimeout: 3*r.cfg.Heartbeat + 5*time.Second,
		ParseTime: false, TimestampStringLocation: time.UTC, UseDecimal: false,
		DisableRetrySync: true, // reconnection is ours: from the committed position, with backoff
		// Rows events of other tables are skipped before their rows are decoded.
		RowsEventDecodeFunc: func(e *replication.RowsEvent, data []byte) error {
			pos, err := e.DecodeHeader(data)
			if err != nil {
				return err
			}
			if e.Table == nil || string(e.Table.Schema) != string(schema) || string(e.Table.Table) != string(tbl) {
				return nil
			}
			return e.DecodeData(pos, data)
		},
	}
}

func splitAddr(addr string) (string, uint16) {
	host, p, ok := strings.Cut(addr, ":")
	if !ok {
		return addr, 3306
	}
	var port uint16
	fmt.Sscan(p, &port)
	return host, port
}

func mysqlGTID(sid []byte, gno int64) string {
	if len(sid) != 16 {
		return fmt.Sprintf("%x:%d", sid, gno)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x:%d", sid[0:4], sid[4:6], sid[6:8], sid[8:10], sid[10:16], gno)
}

// classify turns "the server no longer has the binlog" into ErrPurged; everything else stays retryable.
func classify(err error) error {
	var me *gomysql.MyError
	if errors.As(err, &me) && me.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		return fmt.Errorf("%w: the source cannot serve the checkpoint's position (%s): start over — drop the csmh_sync_* tables in the target schema and empty the target's copied range — then run again, and raise binlog retention",
			ErrPurged, me.Message)
	}
	if err != nil && strings.Contains(err.Error(), "1236") {
		return fmt.Errorf("%w: %v: start over with a fresh checkpoint and raise binlog retention", ErrPurged, err)
	}
	return err
}
