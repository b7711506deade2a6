package trace

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressPrintsALineEveryInterval(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress(&out, "pushing x")
	p.Every = 20 * time.Millisecond
	// A small transfer says nothing.
	p.Update(1<<20, 2<<20)
	// A big one: a line per interval, whatever the number of chunks.
	start := time.Now()
	for i := int64(1); time.Since(start) < 110*time.Millisecond; i++ {
		p.Update(i*1000, 50e6)
		time.Sleep(time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || len(lines) > 7 {
		t.Fatalf("%d lines for ~110 ms at one per 20 ms:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "pushing x: ") || !strings.Contains(lines[0], " of 50.0 MB (") || !strings.HasSuffix(lines[0], "/s)") {
		t.Errorf("line %q", lines[0])
	}
	var nilProgress *Progress
	nilProgress.Update(1, 1) // no report wanted: no panic
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1500: "1.5 kB", 30e6: "30.0 MB", 2_500_000_000: "2.5 GB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
