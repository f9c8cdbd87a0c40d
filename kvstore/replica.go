package kvstore

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
)

// replica is this worker's read-only copy of pools and proxies, fed by KV
// watches. It only proposes: every decision is made by a revision-checked
// write, so a stale replica costs a retry, never an over-lease.
type replica struct {
	mu       sync.RWMutex
	proxies  map[string]*proxyEntry   // by proxy id
	members  map[string][]*proxyEntry // by pool name, in added order (Seq)
	pools    map[string]*poolEntry    // by pool name
	seen     map[string]uint64        // highest stream sequence applied, by bucket
	advanced chan struct{}            // closed and replaced whenever seen grows

	counts   map[string]*poolCounts // by pool name, as of countsAt
	index    map[string]*poolIndex  // by pool name, as of countsAt
	countsAt time.Time
	expiries expiryHeap

	leases *leaseIndex

	// onChange is told of every proxy version the replica installs, after
	// the lock is released; waiting acquires are woken through it.
	onChange func(*ProxyRecord)

	// strs, floats and ints share the few distinct values that most proxies
	// repeat (pool, country, city, source, isp, consumer, coordinates of a
	// city, asn, max_concurrency) between records, so that a large pool
	// costs memory for what differs, not for what repeats. Each keeps at
	// most internMax values: past that, new values are not shared.
	strs   map[string]*string
	floats map[float64]*float64
	ints   map[int64]*int64
	maxes  map[int]*int
}

const internMax = 1 << 16

// proxyEntry is an immutable snapshot of one proxy record at a revision.
type proxyEntry struct {
	rec *ProxyRecord
	rev uint64
	// counted is what this proxy adds to its pool's counts, and slot its
	// place in the pool index's random-pick array while available; both
	// change only under the replica's write lock.
	counted entryCounts
	slot    int32
}

type poolEntry struct {
	rec *PoolRecord
	rev uint64
}

func newReplica() *replica {
	return &replica{
		proxies:  map[string]*proxyEntry{},
		members:  map[string][]*proxyEntry{},
		pools:    map[string]*poolEntry{},
		seen:     map[string]uint64{},
		advanced: make(chan struct{}),
		counts:   map[string]*poolCounts{},
		index:    map[string]*poolIndex{},
		strs:     map[string]*string{},
		floats:   map[float64]*float64{},
		ints:     map[int64]*int64{},
		maxes:    map[int]*int{},
		leases:   newLeaseIndex(1 << 14),
	}
}

// startWatch feeds the replica from both buckets and waits for their initial
// contents.
func (s *Store) startWatch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	s.cancelWatch = cancel
	s.watchDone = make(chan struct{})
	var wg sync.WaitGroup
	ready := make(chan error, 2)
	for _, kv := range []jetstream.KeyValue{s.pools, s.proxies} {
		w, err := kv.WatchAll(wctx)
		if err != nil {
			cancel()
			close(s.watchDone)
			return storeErr("watch "+kv.Bucket(), err)
		}
		wg.Add(1)
		go func(bucket string, w jetstream.KeyWatcher) {
			defer wg.Done()
			s.consume(bucket, w, ready)
		}(kv.Bucket(), w)
	}
	go func() { wg.Wait(); close(s.watchDone) }()
	for i := 0; i < 2; i++ {
		select {
		case err := <-ready:
			if err != nil {
				s.Close()
				return err
			}
		case <-ctx.Done():
			s.Close()
			return storeErr("initial watch", ctx.Err())
		}
	}
	return nil
}

func (s *Store) consume(bucket string, w jetstream.KeyWatcher, ready chan<- error) {
	defer func() { _ = w.Stop() }()
	initial := true
	for e := range w.Updates() {
		if e == nil {
			if initial {
				initial = false
				ready <- nil
			}
			continue
		}
		deleted := e.Operation() != jetstream.KeyValuePut
		var err error
		switch bucket {
		case ProxiesBucket:
			if s.replica.has(e.Key(), e.Revision()) {
				break // this worker's own write, installed when it committed
			}
			var rec *ProxyRecord
			if !deleted {
				if rec = s.inflight.match(e.Key(), e.Value()); rec == nil {
					rec = new(ProxyRecord)
					err = json.Unmarshal(e.Value(), rec)
				}
			}
			if err == nil {
				s.replica.applyProxy(e.Key(), rec, e.Revision(), true)
			}
		case PoolsBucket:
			var rec *PoolRecord
			if !deleted {
				rec = new(PoolRecord)
				err = json.Unmarshal(e.Value(), rec)
			}
			if err == nil {
				s.replica.applyPool(e.Key(), rec, e.Revision(), true)
			}
		}
		if err != nil {
			s.log.Error("undecodable record skipped by the replica", zapBucket(bucket), zapKey(e.Key()), zapErr(err))
		}
		s.replica.markSeen(bucket, e.Revision())
	}
}

// applyProxy installs rec (nil: deleted) at rev. Only newer revisions win. A
// worker's own writes are applied with fromWatch false: they update known
// proxies but never re-create one, since a delete the watch already applied
// would otherwise come back as a ghost.
func (r *replica) applyProxy(id string, rec *ProxyRecord, rev uint64, fromWatch bool) {
	r.mu.Lock()
	installed := r.applyProxyLocked(id, rec, rev, fromWatch)
	hook := r.onChange
	r.mu.Unlock()
	if installed && rec != nil && hook != nil {
		hook(rec)
	}
}

func (r *replica) applyProxyLocked(id string, rec *ProxyRecord, rev uint64, fromWatch bool) bool {
	old := r.proxies[id]
	if old != nil && old.rev >= rev {
		return false
	}
	if old == nil && (rec == nil || !fromWatch) {
		return false
	}
	if rec == nil {
		delete(r.proxies, id)
		r.removeMember(old)
		r.countChange(old, nil)
		r.leases.update(old, nil)
		return true
	}
	r.intern(rec)
	e := &proxyEntry{rec: rec, rev: rev}
	r.proxies[rec.ID] = e
	r.countChange(old, e)
	r.leases.update(old, e)
	if old != nil && old.rec.PoolName == rec.PoolName && old.rec.Seq == rec.Seq {
		list := r.members[rec.PoolName]
		list[r.memberIndex(list, rec.Seq)] = e
		return true
	}
	if old != nil {
		r.removeMember(old)
	}
	list := r.members[rec.PoolName]
	i := sort.Search(len(list), func(i int) bool { return list[i].rec.Seq >= rec.Seq })
	list = append(list, nil)
	copy(list[i+1:], list[i:])
	list[i] = e
	r.members[rec.PoolName] = list
	return true
}

// intern replaces rec's repeated values by shared copies. Records are never
// mutated once installed, so sharing is safe. Callers hold r.mu.
func (r *replica) intern(rec *ProxyRecord) {
	str := func(s string) string { return *r.ptr(&s) }
	rec.PoolID, rec.PoolName = str(rec.PoolID), str(rec.PoolName)
	rec.Protocol = model.Protocol(str(string(rec.Protocol)))
	rec.Status = model.ProxyStatus(str(string(rec.Status)))
	for _, p := range []**string{&rec.Source, &rec.Country, &rec.City, &rec.ISP} {
		if *p != nil {
			*p = r.ptr(*p)
		}
	}
	rec.Latitude, rec.Longitude = share(r.floats, rec.Latitude), share(r.floats, rec.Longitude)
	rec.ASN, rec.MaxConcurrency = share(r.ints, rec.ASN), share(r.maxes, rec.MaxConcurrency)
	for i := range rec.Holders {
		rec.Holders[i].ConsumerID = str(rec.Holders[i].ConsumerID)
		rec.Holders[i].ConsumerName = str(rec.Holders[i].ConsumerName)
	}
}

func (r *replica) ptr(s *string) *string { return share(r.strs, s) }

// share returns the shared pointer to *p's value, making p the shared one
// if there is none yet and room for it.
func share[T comparable](m map[T]*T, p *T) *T {
	if p == nil {
		return nil
	}
	if q, ok := m[*p]; ok {
		return q
	}
	if len(m) < internMax {
		m[*p] = p
	}
	return p
}

func (r *replica) removeMember(e *proxyEntry) {
	list := r.members[e.rec.PoolName]
	i := r.memberIndex(list, e.rec.Seq)
	if i < 0 {
		return
	}
	list = append(list[:i], list[i+1:]...)
	if len(list) == 0 {
		delete(r.members, e.rec.PoolName)
		return
	}
	r.members[e.rec.PoolName] = list
}

func (r *replica) memberIndex(list []*proxyEntry, seq uint64) int {
	i := sort.Search(len(list), func(i int) bool { return list[i].rec.Seq >= seq })
	if i < len(list) && list[i].rec.Seq == seq {
		return i
	}
	return -1
}

func (r *replica) applyPool(name string, rec *PoolRecord, rev uint64, fromWatch bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.pools[name]
	if old != nil && old.rev >= rev {
		return
	}
	if old == nil && (rec == nil || !fromWatch) {
		return
	}
	if rec == nil {
		delete(r.pools, name)
		return
	}
	r.pools[name] = &poolEntry{rec: rec, rev: rev}
}

func (r *replica) markSeen(bucket string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev > r.seen[bucket] {
		r.seen[bucket] = rev
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
}

// waitSeen blocks until the replica has applied bucket's sequence seq.
func (r *replica) waitSeen(ctx context.Context, bucket string, seq uint64) error {
	for {
		r.mu.RLock()
		done, ch := r.seen[bucket] >= seq, r.advanced
		r.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("replica of %s behind sequence %d: %w", bucket, seq, ctx.Err())
		}
	}
}

// has reports whether the replica holds proxy id at rev or later.
func (r *replica) has(id string, rev uint64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.proxies[id]
	return e != nil && e.rev >= rev
}

func (r *replica) proxy(id string) *proxyEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.proxies[id]
}

// lease finds an active lease's proxy entry, or, for a lease whose holder
// was removed within the last endedWindow, its last active view.
func (r *replica) lease(id string) (*proxyEntry, *model.Lease) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if pid, ok := r.leases.active[id]; ok {
		return r.proxies[pid], nil
	}
	if x, ok := r.leases.ended[id]; ok && time.Since(x.at) < endedWindow {
		return nil, &x.last
	}
	return nil, nil
}

func (r *replica) pool(name string) *poolEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pools[name]
}

// scanMembers calls fn on the pool's proxies in added order until fn returns
// false. fn runs under the replica's read lock and must not call back into it.
func (r *replica) scanMembers(name string, fn func(*proxyEntry) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.members[name] {
		if !fn(e) {
			return
		}
	}
}

func (r *replica) allPools() []*poolEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*poolEntry, 0, len(r.pools))
	for _, p := range r.pools {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].rec, out[j].rec
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.Name < b.Name
	})
	return out
}

func (r *replica) allProxies() []*proxyEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*proxyEntry, 0, len(r.proxies))
	for _, p := range r.proxies {
		out = append(out, p)
	}
	return out
}
