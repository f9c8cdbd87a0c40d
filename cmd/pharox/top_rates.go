package main

import (
	"sync"
	"time"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// rates counts each pool's acquires (granted and none free) over a sliding
// window of event times, from the events stream: whichever worker answered,
// each acquire published one event.
type rates struct {
	window time.Duration

	mu     sync.Mutex
	byPool map[string]*poolEvents
	seq    uint64 // highest stream sequence seen (replay)
	seen   chan struct{}
}

type poolEvents struct{ granted, noneFree []time.Time }

func newRates(window time.Duration) *rates {
	return &rates{window: window, byPool: map[string]*poolEvents{}, seen: make(chan struct{})}
}

// add counts one event (the handler of client.SubscribeEvents).
func (r *rates) add(ev client.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Sequence > r.seq {
		r.seq = ev.Sequence
		close(r.seen)
		r.seen = make(chan struct{})
	}
	if ev.Acquire == nil {
		return
	}
	pe := r.byPool[ev.Acquire.PoolName]
	if pe == nil {
		pe = &poolEvents{}
		r.byPool[ev.Acquire.PoolName] = pe
	}
	switch ev.Name {
	case model.EventAcquired:
		pe.granted = append(pe.granted, ev.Time)
	case model.EventAcquireFailed:
		pe.noneFree = append(pe.noneFree, ev.Time)
	}
}

// sequence is the highest stream sequence seen, and a channel closed when
// it grows.
func (r *rates) sequence() (uint64, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq, r.seen
}

// counts are a pool's granted and none-free acquires in the window ending
// at now; older events are dropped.
func (r *rates) counts(pool string, now time.Time) (granted, noneFree int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pe := r.byPool[pool]
	if pe == nil {
		return 0, 0
	}
	from := now.Add(-r.window)
	pe.granted = after(pe.granted, from)
	pe.noneFree = after(pe.noneFree, from)
	return len(pe.granted), len(pe.noneFree)
}

// after drops the times not after from (times arrive about in order; an
// out-of-order one is kept until the ones before it go).
func after(ts []time.Time, from time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(from) {
		i++
	}
	return ts[i:]
}
