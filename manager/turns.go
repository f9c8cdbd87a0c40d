package manager

import (
	"context"
	"sync"
)

// turns queue this worker's own writes to one proxy behind each other. They
// decide nothing — the revision-checked write does, across workers — but a
// worker's concurrent requests on a hot proxy then take turns instead of
// failing each other's compare-and-swap and retrying, and an acquire passes
// over a proxy this worker is writing to (busy) for a free one instead of
// queueing behind it.
type turns struct {
	mu    sync.Mutex
	byID  map[string]*turn
	ended chan struct{} // closed and replaced whenever a turn ends
}

type turn struct {
	held chan struct{} // holds one token while the turn is taken
	refs int           // the holder and those waiting
}

func newTurns() *turns { return &turns{byID: map[string]*turn{}, ended: make(chan struct{})} }

// take waits for id's turn, or for ctx to end; release ends the turn.
func (t *turns) take(ctx context.Context, id string) (release func(), err error) {
	t.mu.Lock()
	tn := t.byID[id]
	if tn == nil {
		tn = &turn{held: make(chan struct{}, 1)}
		t.byID[id] = tn
	}
	tn.refs++
	t.mu.Unlock()
	leave := func() {
		t.mu.Lock()
		if tn.refs--; tn.refs == 0 {
			delete(t.byID, id)
		}
		close(t.ended)
		t.ended = make(chan struct{})
		t.mu.Unlock()
	}
	select {
	case tn.held <- struct{}{}:
		return func() { <-tn.held; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}

// busy reports whether this worker is writing to id or waiting to.
func (t *turns) busy(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id] != nil
}

// changed returns a channel closed when any turn ends.
func (t *turns) changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended
}
