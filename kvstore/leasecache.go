package kvstore

import (
	"sync"

	"github.com/pharox/pharox-nats/model"
)

// leaseCache remembers the records of leases this worker granted, so that a
// release answered by the same worker skips one read. It decides nothing: a
// stale entry only sends the release down its slower path (the proxy's
// revision-checked write finds the holder gone, or the record's update
// finds a newer revision and re-reads).
type leaseCache struct {
	mu   sync.Mutex
	m    map[string]cachedLease
	ring []string
	next int
}

type cachedLease struct {
	lease model.Lease
	rev   uint64
}

func newLeaseCache(size int) *leaseCache {
	return &leaseCache{m: make(map[string]cachedLease, size), ring: make([]string, size)}
}

func (c *leaseCache) put(l model.Lease, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.ring[c.next]; old != "" {
		delete(c.m, old)
	}
	c.ring[c.next] = l.ID
	c.next = (c.next + 1) % len(c.ring)
	c.m[l.ID] = cachedLease{lease: l, rev: rev}
}

func (c *leaseCache) take(id string) (cachedLease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	delete(c.m, id)
	return e, ok
}
