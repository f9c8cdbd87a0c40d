package events

import "sync"

// tracker keeps this worker's outbox watermark on each proxies stream (one
// per shard): the highest sequence W of the stream such that every write of this worker at or below W has
// had all its events published (its ending records are written before the
// write is reported committed). Other workers forget the entries of this
// worker's writes at or below W; what is above it, they publish should this
// worker die.
type tracker struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]*span  // by ticket
	hi   map[string]uint64 // per stream: highest sequence known to be below any future write
}

// span is one write that owes events: before it commits only a bound on
// its sequence is known (above), after it the sequence itself and the
// events still to be acknowledged.
type span struct {
	stream string
	above  uint64
	rev    uint64
	left   int
}

func newTracker() *tracker { return &tracker{open: map[uint64]*span{}, hi: map[string]uint64{}} }

// begin registers a write on stream whose sequence will be above above.
func (t *tracker) begin(stream string, above uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	t.open[t.next] = &span{stream: stream, above: above}
	t.hi[stream] = max(t.hi[stream], above)
	return t.next
}

// committed records the write's sequence and how many events it owes.
func (t *tracker) committed(ticket, rev uint64, events int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.open[ticket]
	if s == nil {
		return
	}
	t.hi[s.stream] = max(t.hi[s.stream], rev)
	if events == 0 {
		delete(t.open, ticket)
		return
	}
	s.rev, s.left = rev, events
}

// acked counts one event of the write as published.
func (t *tracker) acked(ticket uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.open[ticket]; s != nil {
		if s.left--; s.left <= 0 {
			delete(t.open, ticket)
		}
	}
}

// abandon forgets a write that did not commit.
func (t *tracker) abandon(ticket uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, ticket)
}

// watermark is the current watermark on stream.
func (t *tracker) watermark(stream string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watermarkLocked(stream)
}

// watermarks are the current watermarks of every stream written.
func (t *tracker) watermarks() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]uint64, len(t.hi))
	for stream := range t.hi {
		out[stream] = t.watermarkLocked(stream)
	}
	return out
}

func (t *tracker) watermarkLocked(stream string) uint64 {
	w := t.hi[stream]
	for _, s := range t.open {
		if s.stream != stream {
			continue
		}
		if s.rev == 0 {
			w = min(w, s.above) // its sequence is above s.above, not known yet
		} else {
			w = min(w, s.rev-1)
		}
	}
	return w
}

// pending is how many writes still owe events.
func (t *tracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}
