package kvstore

import (
	"bytes"
	"sync"
)

// inflight remembers this worker's proxy writes between sending them and
// installing them, so that the watch, which often delivers a write back
// before its acknowledgement arrives, installs the record already in hand
// instead of decoding the same bytes again. The nonce in every record makes
// equal bytes mean the same write. The record kept here is the writer's
// copy for the watch: installing a record interns its values in place,
// while the writer goes on reading its own.
type inflight struct {
	mu sync.Mutex
	m  map[string]inflightWrite // by proxy id; one at a time per key (keyLocks)
}

type inflightWrite struct {
	data []byte
	rec  *ProxyRecord
}

func newInflight() *inflight { return &inflight{m: map[string]inflightWrite{}} }

func (f *inflight) start(id string, data []byte, rec *ProxyRecord) {
	f.mu.Lock()
	f.m[id] = inflightWrite{data: data, rec: rec}
	f.mu.Unlock()
}

func (f *inflight) done(id string) {
	f.mu.Lock()
	delete(f.m, id)
	f.mu.Unlock()
}

// match returns the record of this worker's write of id whose encoding is
// data, if one is in flight.
func (f *inflight) match(id string, data []byte) *ProxyRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.m[id]; ok && bytes.Equal(w.data, data) {
		return w.rec
	}
	return nil
}
