package verify

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Range is one chunk that differs, with the rows each side holds in it.
type Range struct {
	Start       uint64 `json:"start"`
	End         uint64 `json:"end"`
	SourceCount int64  `json:"source_count"`
	TargetCount int64  `json:"target_count"`
}

// Result is the verdict of one run.
type Result struct {
	// Equal is true when no difference remains: none was found, or every one found was repaired.
	Equal         bool   `json:"equal"`
	Mode          Mode   `json:"mode"`
	Start         uint64 `json:"start_id"` // the id range compared (0, 0 when there were no rows)
	End           uint64 `json:"end_id"`
	ChunksChecked int    `json:"chunks_checked"`
	ChunksSkipped int    `json:"chunks_skipped"` // incremental: equal in the ledger and untouched since
	RowsChecked   int64  `json:"rows_checked"`   // source rows in the checked chunks
	RowsSkipped   int64  `json:"rows_skipped"`   // source rows the ledger counted in the skipped chunks
	// Ids found missing in the target, extra in the target, or different; at most MaxDiffs each, sorted.
	// Count mode finds no ids: see DifferentChunks.
	Missing   []uint64 `json:"missing"`
	Extra     []uint64 `json:"extra"`
	Different []uint64 `json:"different"`
	// MissingTotal, ExtraTotal and DifferentTotal count every id found, listed or not.
	MissingTotal    int64         `json:"missing_total"`
	ExtraTotal      int64         `json:"extra_total"`
	DifferentTotal  int64         `json:"different_total"`
	DifferentChunks []Range       `json:"different_chunks"`
	Repaired        int           `json:"repaired"` // ids re-copied or deleted and found equal afterwards
	Duration        time.Duration `json:"duration_ns"`
}

// Print writes a human summary.
func (r *Result) Print(w io.Writer) {
	verdict := "EQUAL"
	if !r.Equal {
		verdict = "DIFFERENT"
	}
	fmt.Fprintf(w, "verify (%s): %s\n", r.Mode, verdict)
	if r.Start == 0 && r.End == 0 {
		fmt.Fprintf(w, "  no rows to compare\n")
	} else {
		fmt.Fprintf(w, "  ids %d..%d: %d chunks checked, %d skipped (unchanged since verified), %d source rows checked (%d in skipped chunks), %s\n",
			r.Start, r.End, r.ChunksChecked, r.ChunksSkipped, r.RowsChecked, r.RowsSkipped, r.Duration.Round(time.Millisecond))
	}
	found := r.MissingTotal + r.ExtraTotal + r.DifferentTotal
	if found > 0 {
		fmt.Fprintf(w, "  differing ids: %d (%d missing in the target, %d extra in the target, %d with different values)\n",
			found, r.MissingTotal, r.ExtraTotal, r.DifferentTotal)
		printIDs(w, "missing", r.Missing, r.MissingTotal)
		printIDs(w, "extra", r.Extra, r.ExtraTotal)
		printIDs(w, "different", r.Different, r.DifferentTotal)
	}
	if r.Repaired > 0 || found > 0 && r.Equal {
		fmt.Fprintf(w, "  repaired %d ids (re-copied from the source and compared again)\n", r.Repaired)
	}
	if len(r.DifferentChunks) > 0 {
		fmt.Fprintf(w, "  %d chunks differ:\n", len(r.DifferentChunks))
		for i, c := range r.DifferentChunks {
			if i == 20 {
				fmt.Fprintf(w, "    … and %d more\n", len(r.DifferentChunks)-i)
				break
			}
			fmt.Fprintf(w, "    ids %d..%d: source %d rows, target %d rows\n", c.Start, c.End, c.SourceCount, c.TargetCount)
		}
	}
}

func printIDs(w io.Writer, what string, ids []uint64, total int64) {
	if total == 0 {
		return
	}
	const show = 20
	parts := make([]string, 0, show)
	for i, id := range ids {
		if i == show {
			break
		}
		parts = append(parts, strconv.FormatUint(id, 10))
	}
	more := ""
	if total > int64(len(parts)) {
		more = fmt.Sprintf(" … (%d in all)", total)
	}
	fmt.Fprintf(w, "    %s: %s%s\n", what, strings.Join(parts, ", "), more)
}

// diffKind says how an id differs.
type diffKind int

const (
	missing   diffKind = iota // in the source only
	extra                     // in the target only
	different                 // in both, with different values
)

func (k diffKind) String() string {
	return [...]string{"missing", "extra", "different"}[k]
}

// diff is one differing id.
type diff struct {
	id   uint64
	kind diffKind
}

// collector gathers the workers' findings into the Result.
type collector struct {
	mu         sync.Mutex
	res        *Result
	max        int
	unresolved int64 // differences found and not repaired, plus differing count-mode chunks
}

func (c *collector) diffs(ds []diff) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		var list *[]uint64
		switch d.kind {
		case missing:
			c.res.MissingTotal++
			list = &c.res.Missing
		case extra:
			c.res.ExtraTotal++
			list = &c.res.Extra
		default:
			c.res.DifferentTotal++
			list = &c.res.Different
		}
		if len(*list) < c.max {
			*list = append(*list, d.id)
		}
	}
}

func (c *collector) differentChunk(r Range, unresolved bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.DifferentChunks = append(c.res.DifferentChunks, r)
	if unresolved {
		c.unresolved++
	}
}

func (c *collector) settle(unrepaired int64, repaired int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unresolved += unrepaired
	c.res.Repaired += repaired
}

func (c *collector) checked(rows int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.ChunksChecked++
	c.res.RowsChecked += rows
}

func (c *collector) skipped(rows int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.ChunksSkipped++
	c.res.RowsSkipped += rows
}

// finish sorts the lists and sets the verdict.
func (c *collector) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range []*[]uint64{&c.res.Missing, &c.res.Extra, &c.res.Different} {
		slices.Sort(*l)
		if *l == nil {
			*l = []uint64{}
		}
	}
	slices.SortFunc(c.res.DifferentChunks, func(a, b Range) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	if c.res.DifferentChunks == nil {
		c.res.DifferentChunks = []Range{}
	}
	c.res.Equal = c.unresolved == 0
}
