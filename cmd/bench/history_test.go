package main

import (
	"testing"
	"time"
)

// Pairs complete at a steady rate while the CPU grows at 2 ms per 1 ms of
// the first 20,000 pairs and 3 ms per 1 ms of the next: each run of 20,000
// gets the CPU of its own span, read between samples that do not fall on
// its ends.
func TestCPUPer20k(t *testing.T) {
	const pairs = 40000
	tl := make([]time.Duration, pairs)
	for i := range tl {
		tl[i] = time.Duration(i+1) * 100 * time.Microsecond // 2 s per 20,000
	}
	cpuAt := func(d time.Duration) time.Duration {
		if d <= 2*time.Second {
			return 2 * d
		}
		return 4*time.Second + 3*(d-2*time.Second)
	}
	var samples []cpuSample
	for at := 300 * time.Millisecond; at <= 4300*time.Millisecond; at += 300 * time.Millisecond {
		samples = append(samples, cpuSample{at: at, use: cpuUse{server: cpuAt(at) / 2, bench: cpuAt(at) / 2, known: true}})
	}
	got := cpuPer20k(tl, samples)
	if len(got) != 2 {
		t.Fatalf("%d runs of 20,000, want 2", len(got))
	}
	// The samples around 2 s (1.8 s: 3.6 s of CPU, 2.1 s: 4.3 s) straddle
	// the change of rate: the line between them puts 4.0667 s at 2 s, not
	// 4 s. Around 4 s (3.9 s: 9.7 s, 4.2 s: 10.6 s) it is exact.
	want := []time.Duration{4066667 * time.Microsecond, 5933333 * time.Microsecond}
	for i, u := range got {
		total := u.server + u.bench
		if d := total - want[i]; d < -time.Millisecond || d > time.Millisecond || !u.known {
			t.Errorf("run %d: %v of CPU (known %v), want %v", i, total, u.known, want[i])
		}
	}
	if cpuPer20k(tl, nil) != nil {
		t.Error("no samples must give no series")
	}
}
