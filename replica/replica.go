// Package replica is a worker's in-memory copy of the pools and proxies in
// the KV buckets, fed by their watches, with the indexes that make selection
// independent of pool size: per pool, the available proxies in the orders the
// selectors need, incremental statistics, the leases by id, and the expiries
// to come. It only proposes: every decision is made by a revision-checked
// write, so a stale replica costs a retry, never an over-lease. It has no
// NATS in it and is tested without a server.
package replica

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// Replica holds the latest version of every pool and proxy it was given.
// Records are never changed once installed, so callers may keep and read
// them without a lock.
type Replica struct {
	mu       sync.RWMutex
	proxies  map[string]*proxyEntry              // by proxy id
	members  map[string]*sortedList[*proxyEntry] // by pool id, in added order (Seq)
	pools    map[string]*poolEntry               // by pool name
	poolIDs  map[string]string                   // pool id -> name, for pools not deleted
	seen     map[string]uint64                   // highest stream sequence applied, by bucket
	advanced chan struct{}                       // closed and replaced whenever seen grows

	counts   map[string]*poolCounts // by pool id, as of countsAt
	index    map[string]*poolIndex  // by pool id, as of countsAt
	countsAt time.Time
	expiries expiryHeap
	// grace is how far the counts' horizon runs behind the clock: leases
	// are judged at the horizon, cooldowns at the clock.
	grace time.Duration
	// endedWindow: how long a lease whose holder went away is told from
	// its last holder while its ending record is missing.
	endedWindow time.Duration

	leases *leaseIndex
	// held are the proxies that have holders (expired or not), by id, with
	// their holders' earliest expiry: the only ones an expiry sweep has to
	// look at (WithExpiredHolders), kept with every install so that a sweep
	// costs the leased proxies, not the pool, and reads no record.
	held map[string]time.Time
	// consumers counts each consumer's active leases, over every pool, as
	// of countsAt, for the per-consumer limit.
	consumers consumerCounts

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

// proxyEntry is one proxy record at a revision.
type proxyEntry struct {
	rec *record.Proxy
	rev uint64
	// counted is what this proxy adds to its pool's counts, and slot its
	// place in the pool index's random-pick array while available; both
	// change only under the replica's write lock.
	counted entryCounts
	slot    int32
}

type poolEntry struct {
	rec *record.Pool
	rev uint64
}

// Option configures New.
type Option func(*Replica)

// WithGrace says how far behind the clock the horizons given to Advance
// run (the workers' expiry grace): a cooldown is judged at the clock, so it
// ends at its cooldown_until, not grace later.
func WithGrace(d time.Duration) Option { return func(r *Replica) { r.grace = d } }

// WithEndedWindow sets how long a lease whose holder went away is told from
// its last holder while its ending record is missing (DefaultEndedWindow).
func WithEndedWindow(d time.Duration) Option { return func(r *Replica) { r.endedWindow = d } }

// New returns an empty replica.
func New(opts ...Option) *Replica {
	r := &Replica{
		proxies:  map[string]*proxyEntry{},
		members:  map[string]*sortedList[*proxyEntry]{},
		pools:    map[string]*poolEntry{},
		poolIDs:  map[string]string{},
		seen:     map[string]uint64{},
		advanced: make(chan struct{}),
		counts:   map[string]*poolCounts{},
		index:    map[string]*poolIndex{},
		strs:     map[string]*string{},
		floats:   map[float64]*float64{},
		ints:     map[int64]*int64{},
		maxes:    map[int]*int{},
		leases:   newLeaseIndex(1 << 14),
		held:     map[string]time.Time{},

		endedWindow: DefaultEndedWindow,
	}
	for _, opt := range opts {
		opt(r)
	}
	return r
}

// InstallProxy installs the proxy version the bucket's watch delivered (rec
// nil: deleted) at rev. Only a newer revision replaces what is there. It
// reports whether it installed anything.
func (r *Replica) InstallProxy(id string, rec *record.Proxy, rev uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.installProxy(id, rec, rev, true)
}

// Reserve sizes an empty replica's proxy table for n proxies, so that the
// initial load does not grow it step by step; it does nothing once the
// replica holds proxies.
func (r *Replica) Reserve(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.proxies) == 0 && n > 0 {
		r.proxies = make(map[string]*proxyEntry, n)
	}
}

// InstallOwnProxy installs a version this worker's own write committed (rec
// nil: deleted). It updates a proxy the replica knows but never creates one:
// a delete the watch applied already would otherwise come back as a ghost.
func (r *Replica) InstallOwnProxy(id string, rec *record.Proxy, rev uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.installProxy(id, rec, rev, false)
}

// RemoveProxy forgets a proxy this worker deleted, whatever its revision.
func (r *Replica) RemoveProxy(id string) {
	r.InstallOwnProxy(id, nil, ^uint64(0))
}

func (r *Replica) installProxy(id string, rec *record.Proxy, rev uint64, fromWatch bool) bool {
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
		delete(r.held, id)
		return true
	}
	r.intern(rec)
	e := &proxyEntry{rec: rec, rev: rev}
	r.proxies[rec.ID] = e
	r.countChange(old, e)
	r.leases.update(old, e)
	if len(rec.Holders) > 0 {
		r.held[rec.ID] = earliestExpiry(rec.Holders)
	} else if old != nil {
		delete(r.held, rec.ID)
	}
	if old != nil && (old.rec.PoolID != rec.PoolID || old.rec.Seq != rec.Seq) {
		r.removeMember(old)
	}
	// The same pool and added order replace the old entry in place.
	r.membersOf(rec.PoolID).ReplaceOrInsert(e)
	return true
}

// membersOf is the member list of pool id poolID, made when missing.
// It is a sorted list, not a slice: a pool whose proxies were written in
// no particular order reaches a fresh worker in that order (the watch
// delivers each proxy's last version in stream order), and inserting into
// the middle of a slice of a million made that load quadratic.
func (r *Replica) membersOf(poolID string) *sortedList[*proxyEntry] {
	l := r.members[poolID]
	if l == nil {
		l = newSortedList(lessMember)
		r.members[poolID] = l
	}
	return l
}

func lessMember(a, b *proxyEntry) bool { return a.rec.Seq < b.rec.Seq }

// seqProbe is an entry that sorts as added order seq, to search a member
// list with.
func seqProbe(seq uint64) *proxyEntry { return &proxyEntry{rec: &record.Proxy{Seq: seq}} }

// InstallPool installs the pool version the watch delivered (rec nil:
// deleted) at rev.
func (r *Replica) InstallPool(name string, rec *record.Pool, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.installPool(name, rec, rev, true)
}

// InstallOwnPool installs a pool version this worker's own write committed;
// like InstallOwnProxy it never creates one.
func (r *Replica) InstallOwnPool(name string, rec *record.Pool, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.installPool(name, rec, rev, false)
}

func (r *Replica) installPool(name string, rec *record.Pool, rev uint64, fromWatch bool) {
	old := r.pools[name]
	if old != nil && old.rev >= rev {
		return
	}
	if old == nil && (rec == nil || !fromWatch) {
		return
	}
	if old != nil {
		delete(r.poolIDs, old.rec.ID)
	}
	if rec == nil {
		delete(r.pools, name)
		return
	}
	r.pools[name] = &poolEntry{rec: rec, rev: rev}
	if !rec.Deleted {
		r.poolIDs[rec.ID] = name
	}
}

// MarkSeen records that the replica has applied bucket's stream up to seq.
func (r *Replica) MarkSeen(bucket string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq > r.seen[bucket] {
		r.seen[bucket] = seq
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
}

// Seen is the bucket's stream sequence the replica has applied up to.
func (r *Replica) Seen(bucket string) uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.seen[bucket]
}

// WaitSeen blocks until the replica has applied bucket's sequence seq.
func (r *Replica) WaitSeen(ctx context.Context, bucket string, seq uint64) error {
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

// Has reports whether the replica holds proxy id at rev or later.
func (r *Replica) Has(id string, rev uint64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.proxies[id]
	return e != nil && e.rev >= rev
}

// Proxy returns the proxy's record and its revision.
func (r *Replica) Proxy(id string) (*record.Proxy, uint64, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.proxies[id]; e != nil {
		return e.rec, e.rev, true
	}
	return nil, 0, false
}

// Lease finds an active lease: the record of the proxy that holds it and
// that record's revision. For a lease whose holder went away within the
// last ended window (WithEndedWindow) it returns instead the lease as last seen active (last).
func (r *Replica) Lease(id string) (rec *record.Proxy, rev uint64, last *model.Lease) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if pid, ok := r.leases.active[id]; ok {
		if e := r.proxies[pid]; e != nil {
			return e.rec, e.rev, nil
		}
	}
	if x, ok := r.leases.ended[id]; ok && time.Since(x.at) < r.endedWindow {
		l := x.last
		return nil, 0, &l
	}
	return nil, 0, nil
}

// Pool returns the pool's record; a pool being deleted is gone.
func (r *Replica) Pool(name string) (*record.Pool, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.pools[name]; e != nil && !e.rec.Deleted {
		return e.rec, true
	}
	return nil, false
}

// poolID is the id of the pool named name, "" when there is none (or it is
// being deleted). Callers hold r.mu.
func (r *Replica) poolID(name string) string {
	if e := r.pools[name]; e != nil && !e.rec.Deleted {
		return e.rec.ID
	}
	return ""
}

// Pools returns every pool not being deleted, oldest first.
func (r *Replica) Pools() []*record.Pool {
	r.mu.RLock()
	out := make([]*record.Pool, 0, len(r.pools))
	for _, p := range r.pools {
		if !p.rec.Deleted {
			out = append(out, p.rec)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.Name < b.Name
	})
	return out
}

// Members calls fn on the pool's proxies whose added order is after seq,
// in added order, until fn returns false. Finding where to start costs
// log(pool size). fn runs under the replica's read lock and must not call
// back into it. A proxy belongs to the pool whose id it carries: one left
// behind by a deleted pool of the same name is no member.
func (r *Replica) Members(pool string, after uint64, fn func(*record.Proxy) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.members[r.poolID(pool)]
	if list == nil || after == ^uint64(0) {
		return
	}
	list.AscendGreaterOrEqual(seqProbe(after+1), func(e *proxyEntry) bool { return fn(e.rec) })
}

// WithExpiredHolders returns the ids of the proxies holding a lease that
// expired by horizon, which a sweep records as expired. Only the proxies
// with holders are looked at (a proxy without any has none expired): a
// scan of every proxy held the read lock for a fifth of a second at a
// million proxies, every sweep, and writes and picks queued behind it.
func (r *Replica) WithExpiredHolders(horizon time.Time) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var ids []string
	for id, earliest := range r.held {
		// Some holder expired by horizon (LiveHolders below the holders)
		// exactly when the earliest did.
		if !earliest.After(horizon) {
			ids = append(ids, id)
		}
	}
	return ids
}

// earliestExpiry is the earliest of the holders' expiries (holders not
// empty).
func earliestExpiry(hs []record.Holder) time.Time {
	t := hs[0].ExpiresAt
	for i := range hs[1:] {
		if h := &hs[i+1]; h.ExpiresAt.Before(t) {
			t = h.ExpiresAt
		}
	}
	return t
}

// ProxyIDs returns the ids of every proxy the replica holds.
func (r *Replica) ProxyIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.proxies))
	for id := range r.proxies {
		out = append(out, id)
	}
	return out
}

// MembersOf returns the ids of the proxies that carry pool id poolID.
func (r *Replica) MembersOf(poolID string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.members[poolID]
	if list == nil {
		return []string{}
	}
	out := make([]string, 0, list.Len())
	list.Ascend(func(e *proxyEntry) bool {
		out = append(out, e.rec.ID)
		return true
	})
	return out
}

// Orphans returns the ids of proxies that belong to no pool: left behind
// by a pool deleted (or being deleted), to be deleted in turn.
func (r *Replica) Orphans() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id, list := range r.members {
		if _, ok := r.poolIDs[id]; ok {
			continue
		}
		list.Ascend(func(e *proxyEntry) bool {
			out = append(out, e.rec.ID)
			return true
		})
	}
	return out
}

// Tombstones returns the pools being deleted.
func (r *Replica) Tombstones() []*record.Pool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*record.Pool
	for _, p := range r.pools {
		if p.rec.Deleted {
			out = append(out, p.rec)
		}
	}
	return out
}

// InPool reports whether rec belongs to a pool that is not deleted.
func (r *Replica) InPool(rec *record.Proxy) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.poolIDs[rec.PoolID]
	return ok
}

func (r *Replica) removeMember(e *proxyEntry) {
	list := r.members[e.rec.PoolID]
	if list == nil {
		return
	}
	list.Delete(e)
	if list.Len() == 0 {
		delete(r.members, e.rec.PoolID)
	}
}

// intern replaces rec's repeated values by shared copies. Records are never
// changed once installed, so sharing is safe. Callers hold r.mu.
func (r *Replica) intern(rec *record.Proxy) {
	str := r.sharedString
	rec.PoolID, rec.PoolName = str(rec.PoolID), str(rec.PoolName)
	rec.Protocol = model.Protocol(str(string(rec.Protocol)))
	rec.Status = model.ProxyStatus(str(string(rec.Status)))
	for _, p := range []**string{&rec.Source, &rec.Country, &rec.City, &rec.ISP} {
		if *p != nil {
			*p = share(r.strs, *p)
		}
	}
	rec.Latitude, rec.Longitude = share(r.floats, rec.Latitude), share(r.floats, rec.Longitude)
	rec.ASN, rec.MaxConcurrency = share(r.ints, rec.ASN), share(r.maxes, rec.MaxConcurrency)
	for i := range rec.Holders {
		rec.Holders[i].ConsumerID = str(rec.Holders[i].ConsumerID)
		rec.Holders[i].ConsumerName = str(rec.Holders[i].ConsumerName)
	}
}

// sharedString returns the shared copy of s. Only a value not seen yet
// is copied to the heap (taking the address of s itself would move every
// s there: four garbage allocations per record installed).
func (r *Replica) sharedString(s string) string {
	if p, ok := r.strs[s]; ok {
		return *p
	}
	if len(r.strs) < internMax {
		c := s
		r.strs[c] = &c
	}
	return s
}

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
