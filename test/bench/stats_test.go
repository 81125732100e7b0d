package bench

import (
	"testing"
	"time"
)

// The app-impact verdicts: a rise the samples show beyond doubt is "over" or "within", one a few slow samples
// decide is "undecided".
func TestP99RiseVerdict(t *testing.T) {
	const ms = time.Millisecond
	flat := func(n int, d time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = d + time.Duration(i%7)*100*time.Microsecond
		}
		return s
	}
	withSlow := func(s []time.Duration, every int, d time.Duration) []time.Duration {
		for i := range s {
			if i%every == 0 {
				s[i] = d
			}
		}
		return s
	}
	cases := []struct {
		name         string
		base, during []time.Duration
		want         string
	}{
		{"the same latencies", flat(1000, 3*ms), flat(1000, 3*ms), "within"},
		{"one sample in twenty 30 ms slower", flat(1000, 3*ms), withSlow(flat(1000, 3*ms), 20, 33*ms), "over"},
		{"one slow sample of forty", flat(300, 3*ms), withSlow(flat(40, 3*ms), 40, 40*ms), "undecided"},
	}
	for _, c := range cases {
		lo, hi := p99RiseInterval(c.base, c.during)
		if got := verdict(lo, hi); got != c.want {
			t.Errorf("%s: interval [%v, %v], verdict %q, want %q", c.name, lo, hi, got, c.want)
		}
	}
}

// Pooled rounds keep every sample and the slowest of all rounds.
func TestAppStatsMerge(t *testing.T) {
	var st appStats
	st.merge(appStats{lat: map[string][]time.Duration{"insert": {1, 2}}, slow: map[string][]appSample{"insert": {{took: 2}, {took: 1}}}, errors: map[string]int{"insert": 1}})
	st.merge(appStats{lat: map[string][]time.Duration{"insert": {9}}, slow: map[string][]appSample{"insert": {{took: 9}}}})
	if len(st.lat["insert"]) != 3 || st.errors["insert"] != 1 || st.slow["insert"][0].took != 9 || len(st.slow["insert"]) != 3 {
		t.Fatalf("merged %+v", st)
	}
}
