package backfill

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Progress is a snapshot of the copy.
type Progress struct {
	Copied     int64         // rows copied (this run and earlier runs)
	IDsDone    uint64        // ids of the range behind the segments' next ids
	IDsTotal   uint64        // ids in the range
	RowsPerSec float64       // over the last ~30 s
	ETA        time.Duration // -1 unknown
	Done       bool
	Paused     bool
	Planned    bool
}

// Ratio is the fraction of the id range copied.
func (p Progress) Ratio() float64 {
	if p.Done {
		return 1
	}
	if p.IDsTotal == 0 {
		return 0
	}
	return float64(p.IDsDone) / float64(p.IDsTotal)
}

// Progress returns the current snapshot.
func (b *Backfill) Progress() Progress {
	b.mu.Lock()
	p := Progress{Planned: b.planned}
	var rowsBefore int64
	for _, s := range b.segs {
		if s.End >= s.Start {
			p.IDsTotal += s.End - s.Start + 1
			p.IDsDone += s.End - s.Start + 1 - s.Remaining()
		}
		rowsBefore += int64(s.Rows)
	}
	b.mu.Unlock()
	p.Copied = rowsBefore
	p.Done = b.done.Load()
	p.Paused = b.paused.Load()
	p.RowsPerSec = b.rate.perSecond(time.Now())
	p.ETA = -1
	if p.Done {
		p.ETA = 0
	} else if p.RowsPerSec > 0 && p.IDsDone > 0 {
		rowsPerID := float64(p.Copied) / float64(p.IDsDone)
		p.ETA = time.Duration(float64(p.IDsTotal-p.IDsDone) * rowsPerID / p.RowsPerSec * float64(time.Second))
	}
	return p
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
	for cut < len(r.samples) && at.Sub(r.samples[cut].at) > r.window {
		cut++
	}
	r.samples = r.samples[cut:]
}

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

// spanner adapts the id span of the next chunk so a chunk takes about the target time and holds at most the
// byte budget: sparse ranges (deleted history) grow the span, fat rows shrink it.
type spanner struct {
	span   uint64
	target time.Duration
	budget int64
}

const (
	minSpan = 1
	maxSpan = 1 << 22
)

func newSpanner(target time.Duration, budget int64) *spanner {
	return &spanner{span: 1000, target: target, budget: budget}
}

func (s *spanner) observe(ids uint64, r chunkResult) {
	next := float64(s.span) * 2 // nothing learnt (empty range): grow
	if r.rows > 0 && r.took > 0 {
		byTime := float64(ids) * float64(s.target) / float64(r.took)
		next = byTime
		if r.bytes > 0 {
			bytesPerID := float64(r.bytes) / float64(ids)
			next = min(next, float64(s.budget)/bytesPerID)
		}
	}
	// Move at most ×2 / ÷2 per chunk so one odd chunk does not swing the size.
	next = max(min(next, float64(s.span)*2), float64(s.span)/2)
	s.span = uint64(max(min(next, maxSpan), minSpan))
}

// limiter enforces --max-rows-per-second over copied rows.
type limiter struct {
	perSec float64
	mu     sync.Mutex
	next   time.Time
}

func newLimiter(perSec float64) *limiter { return &limiter{perSec: perSec} }

// take accounts for rows and sleeps until the rate allows more.
func (l *limiter) take(ctx context.Context, rows int64) time.Duration {
	if l.perSec <= 0 || rows <= 0 {
		return 0
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(rows) / l.perSec * float64(time.Second)))
	wait := time.Until(l.next)
	l.mu.Unlock()
	if wait <= 0 {
		return 0
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return wait
}

// Reporter shows progress: a redrawn bar on a terminal, structured log lines otherwise.
type Reporter struct {
	w     io.Writer
	tty   bool
	log   *slog.Logger
	every time.Duration
}

// NewReporter returns a reporter writing to w (a terminal when tty) or to log.
func NewReporter(w io.Writer, tty bool, log *slog.Logger, every time.Duration) *Reporter {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Reporter{w: w, tty: tty && w != nil, log: log, every: every}
}

// Run reports until ctx ends, then once more.
func (r *Reporter) Run(ctx context.Context, get func() Progress) {
	interval := r.every
	if r.tty {
		interval = 500 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.show(get())
			if r.tty {
				fmt.Fprintln(r.w)
			}
			return
		case <-t.C:
			r.show(get())
		}
	}
}

func (r *Reporter) show(p Progress) {
	if !p.Planned {
		return
	}
	eta := "?"
	if p.ETA >= 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	if r.tty {
		const width = 30
		filled := int(p.Ratio() * width)
		bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
		if filled < width {
			bar = bar[:filled] + ">" + bar[filled+1:]
		}
		state := ""
		if p.Paused {
			state = "  PAUSED"
		}
		fmt.Fprintf(r.w, "\r[%s] %5.1f%%  %s rows  %s rows/s  ETA %s%s   ", bar, 100*p.Ratio(), group(p.Copied), group(int64(p.RowsPerSec)), eta, state)
		return
	}
	r.log.Info("backfill progress", "rows", p.Copied, "pct", fmt.Sprintf("%.1f", 100*p.Ratio()),
		"rows_per_sec", int64(p.RowsPerSec), "eta", eta, "paused", p.Paused, "done", p.Done)
}

// group formats 1234567 as 1,234,567.
func group(n int64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[0] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
