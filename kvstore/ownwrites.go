package kvstore

import (
	"bytes"
	"sync"

	"github.com/pharox/pharox-nats/record"
)

// ownWrites remembers this worker's proxy writes between sending them and
// their acknowledgement, so that the watch, which often delivers a write back
// before its acknowledgement arrives, hands over the record already in hand
// instead of decoding the same bytes again. The nonce in every record makes
// equal bytes mean the same write. The record kept here is a copy of the
// writer's: installing a record interns its values in place, while the
// writer goes on reading its own.
type ownWrites struct {
	mu sync.Mutex
	m  map[string]ownWrite // by proxy id; one at a time per key (the manager's turns)
}

type ownWrite struct {
	data []byte
	rec  *record.Proxy
}

func newOwnWrites() *ownWrites { return &ownWrites{m: map[string]ownWrite{}} }

func (w *ownWrites) start(id string, data []byte, rec *record.Proxy) {
	w.mu.Lock()
	w.m[id] = ownWrite{data: data, rec: rec}
	w.mu.Unlock()
}

func (w *ownWrites) done(id string) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

// match returns the record of this worker's write of id whose encoding is
// data, if one is in flight.
func (w *ownWrites) match(id string, data []byte) *record.Proxy {
	w.mu.Lock()
	defer w.mu.Unlock()
	if o, ok := w.m[id]; ok && bytes.Equal(o.data, data) {
		return o.rec
	}
	return nil
}
