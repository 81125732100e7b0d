package backfill_test

import (
	"errors"
	"testing"
	"time"

	"github.com/csmh-sync/csmh-sync/backfill"
	"github.com/csmh-sync/csmh-sync/test/integration/harness"
)

// Config.SameServer: false copies across connections on one server; true across two servers is refused before
// any row is written.
func TestSameServerSetting(t *testing.T) {
	t.Run("false on one server", func(t *testing.T) {
		e := setup(t, true, harness.GenOptions{Rows: 5000, Seed: 14})
		b := e.backfill(t, backfill.Config{SameServer: new(false)})
		if err := b.Run(ctxT(t, 5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if b.SameServer() {
			t.Fatal("same-server path chosen although turned off")
		}
		e.requireEqual(t)
		e.requireCounted(t, e.gen.Rows)
	})
	t.Run("true across two servers", func(t *testing.T) {
		e := setup(t, false, harness.GenOptions{Rows: 5000, Seed: 15})
		err := e.backfill(t, backfill.Config{SameServer: new(true)}).Run(ctxT(t, 5*time.Minute))
		if !errors.Is(err, backfill.ErrConfig) {
			t.Fatalf("Run = %v, want %v", err, backfill.ErrConfig)
		}
		if n := count(t, e.dst, harness.TargetTable); n != 0 {
			t.Fatalf("refused backfill wrote %d rows", n)
		}
	})
}
