package backfill

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Reporter shows the copy's progress: a redrawn bar on a terminal, structured log lines otherwise.
type Reporter struct {
	w     io.Writer
	tty   bool
	log   *slog.Logger
	every time.Duration
}

// NewReporter returns a reporter writing a bar to w when isTTY, else logging every `every` (default 10 s).
func NewReporter(w io.Writer, isTTY bool, log *slog.Logger, every time.Duration) *Reporter {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Reporter{w: w, tty: isTTY && w != nil, log: log, every: every}
}

// Run reports until ctx ends, then once more (and ends the bar's line).
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
	if r.tty {
		fmt.Fprint(r.w, "\r"+barLine(p)+"\x1b[K")
		return
	}
	r.log.Info("backfill progress", "rows", p.Copied, "total", p.Total, "pct", fmt.Sprintf("%.1f", 100*p.Ratio()),
		"rows_per_sec", int64(p.RowsPerSec), "eta", etaString(p.ETA), "paused", p.Paused, "done", p.Done)
}

// barLine is `[=====>    ] 45.2%  1,234,567/2,700,000 rows  41,200 rows/s  ETA 35s`.
func barLine(p Progress) string {
	const width = 30
	filled := min(int(p.Ratio()*width), width)
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	s := fmt.Sprintf("[%s] %5.1f%%  %s/%s rows  %s rows/s  ETA %s", bar, 100*p.Ratio(), group(p.Copied), group(p.Total),
		group(int64(p.RowsPerSec)), etaString(p.ETA))
	if p.Paused {
		s += "  PAUSED"
	}
	return s
}

func etaString(d time.Duration) string {
	if d < 0 {
		return "?"
	}
	return d.Round(time.Second).String()
}

// group formats 1234567 as 1,234,567.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
