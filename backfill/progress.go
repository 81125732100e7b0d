package backfill

import (
	"sync"
	"time"
)

// Progress is a snapshot of the copy.
type Progress struct {
	Copied     int64         // rows copied, by this run and earlier ones (from the checkpoint)
	Total      int64         // estimated rows in the range: copied plus RowsLeft, else from rows per id or the table's estimate
	RowsLeft   int64         // estimated rows not yet copied, from the primary key's row estimates, when Estimated
	Estimated  bool          // RowsLeft is known for every segment not done
	IDsDone    uint64        // ids of the range below the segments' next ids
	IDsTotal   uint64        // ids in the range
	RowsPerSec float64       // over the last ~30 s
	ETA        time.Duration // -1 = unknown
	Done       bool
	Paused     bool
	Planned    bool // the range is known
}

// Ratio is the fraction of the rows copied: by rows, not ids, so one far outlier id does not hold it at a
// fraction of the id range while the rows are all copied. Without a row estimate, the fraction of the id range.
func (p Progress) Ratio() float64 {
	switch {
	case p.Done:
		return 1
	case p.Estimated && p.Total > 0:
		return min(float64(p.Copied)/float64(p.Total), 1)
	case p.IDsTotal == 0:
		return 0
	}
	return float64(p.IDsDone) / float64(p.IDsTotal)
}

// Progress returns the current snapshot.
func (b *Backfill) Progress() Progress {
	left, known := b.rowsLeft()
	b.mu.Lock()
	p := Progress{Planned: b.planned, RowsLeft: left, Estimated: known && b.planned}
	var copied uint64
	for _, s := range b.segs {
		if s.End >= s.Start {
			p.IDsTotal += s.End - s.Start + 1
			p.IDsDone += s.End - s.Start + 1 - s.Remaining()
		}
		copied += s.Rows
	}
	est := b.estRows
	b.mu.Unlock()
	p.Copied = int64(copied)
	p.Done = b.done.Load()
	p.Paused = b.paused.Load()
	p.RowsPerSec = b.rate.perSecond(time.Now())
	p.Total, p.ETA = estimate(p, est)
	return p
}

// estimate returns the expected rows of the range and the time left at the recent rate.
func estimate(p Progress, tableRows int64) (int64, time.Duration) {
	if p.Done {
		return p.Copied, 0
	}
	left := p.IDsTotal - p.IDsDone
	var total float64
	switch {
	case p.Estimated:
		total = float64(p.Copied + p.RowsLeft)
	case p.IDsDone > 0 && p.Copied > 0:
		total = float64(p.Copied) + float64(left)*float64(p.Copied)/float64(p.IDsDone)
	case tableRows > 0:
		total = float64(min(uint64(tableRows), p.IDsTotal))
	default:
		total = float64(p.IDsTotal)
	}
	total = max(total, float64(p.Copied))
	eta := time.Duration(-1)
	if p.RowsPerSec > 0 {
		eta = time.Duration((total - float64(p.Copied)) / p.RowsPerSec * float64(time.Second))
	}
	return int64(total), eta
}

func (b *Backfill) updateGauges() {
	p := b.Progress()
	b.m.Progress.Set(p.Ratio())
	if p.ETA >= 0 {
		b.m.ETA.Set(p.ETA.Seconds())
	}
}

// rateWindow measures rows per second over a sliding window.
type rateWindow struct {
	mu      sync.Mutex
	window  time.Duration
	samples []sample
}

type sample struct {
	at   time.Time
	rows int64
}

func newRateWindow(w time.Duration) *rateWindow { return &rateWindow{window: w} }

func (r *rateWindow) add(at time.Time, rows int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, sample{at, rows})
	cut := 0
	for cut < len(r.samples)-1 && at.Sub(r.samples[cut].at) > r.window {
		cut++
	}
	r.samples = r.samples[cut:]
}

// perSecond is the rows of the samples after the first one, over the time since the first one.
func (r *rateWindow) perSecond(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) < 2 {
		return 0
	}
	var rows int64
	for _, s := range r.samples[1:] {
		rows += s.rows
	}
	span := now.Sub(r.samples[0].at).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(rows) / span
}
