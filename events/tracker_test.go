package events

import "testing"

// The watermark never passes a write whose events are not all published:
// before it commits, not its lower bound; after, not below its sequence.
func TestTrackerWatermark(t *testing.T) {
	tr := newTracker()
	if w := tr.watermark(proxiesStream); w != 0 {
		t.Fatalf("fresh watermark %d", w)
	}
	a := tr.begin(proxiesStream, 10) // will commit above 10
	b := tr.begin(proxiesStream, 12)
	if w := tr.watermark(proxiesStream); w != 10 {
		t.Fatalf("two writes in flight above 10 and 12: watermark %d, want 10", w)
	}
	tr.committed(b, 14, 2) // b owes two events
	if w := tr.watermark(proxiesStream); w != 10 {
		t.Fatalf("a still in flight: watermark %d, want 10", w)
	}
	tr.committed(a, 13, 1)
	if w := tr.watermark(proxiesStream); w != 12 {
		t.Fatalf("a committed at 13 unpublished: watermark %d, want 12", w)
	}
	tr.acked(a)
	if w := tr.watermark(proxiesStream); w != 13 {
		t.Fatalf("b committed at 14 unpublished: watermark %d, want 13", w)
	}
	tr.acked(b)
	if w := tr.watermark(proxiesStream); w != 13 {
		t.Fatalf("b half published: watermark %d, want 13", w)
	}
	tr.acked(b)
	if w := tr.watermark(proxiesStream); w != 14 {
		t.Fatalf("all published: watermark %d, want 14", w)
	}
	c := tr.begin(proxiesStream, 20)
	tr.abandon(c)
	if w := tr.watermark(proxiesStream); w != 20 || tr.pending() != 0 {
		t.Fatalf("after an abandoned write seen above 20: watermark %d pending %d", w, tr.pending())
	}
}
