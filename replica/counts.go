package replica

import (
	"container/heap"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// poolCounts are a pool's statistics kept up to date on every change the
// replica applies, so a stats read or an event's pool_stats costs the same
// for 10 proxies as for 100,000.
type poolCounts struct {
	total, active, available, leased, leases, cooling int
	byStatus                                          [numStatuses]int // gauges.go
}

// entryCounts is what one proxy adds to its pool's counts, packed small
// because one is kept per proxy.
type entryCounts struct {
	leases                     int32
	active, available, cooling bool
	// pickable is available and readable by this worker: only these are in
	// the pool's index (a proxy whose credentials this worker cannot
	// decrypt counts as available in the pool's statistics, which are the
	// same on every worker, but is never proposed here).
	pickable bool
	status   uint8 // statusIndex (gauges.go); fits the struct's padding
}

// contribution is what one proxy adds to its pool's counts at horizon t:
// leases count until t passes their expiry, and a cooldown lasts until the
// clock (t plus the grace) passes its end.
func (r *Replica) contribution(rec *record.Proxy, t time.Time) entryCounts {
	live := rec.LiveHolders(t)
	c := entryCounts{leases: int32(live), status: statusIndex(rec.Status)}
	if rec.Status == model.ProxyActive {
		c.active = true
		c.cooling = rec.Cooling(t.Add(r.grace))
		c.available = !c.cooling && (rec.MaxConcurrency == nil || live < *rec.MaxConcurrency)
		c.pickable = c.available && !rec.CredentialsUnreadable()
	}
	return c
}

func (p *poolCounts) add(c entryCounts, sign int) {
	p.total += sign
	p.active += sign * b2i(c.active)
	p.available += sign * b2i(c.available)
	p.leased += sign * b2i(c.leases > 0)
	p.leases += sign * int(c.leases)
	p.cooling += sign * b2i(c.cooling)
	p.byStatus[c.status] += sign
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// expiry is the moment a holder stops counting, or a cooldown ends (no
// lease id). Both happen without any write, so the counts are advanced
// through these in time order. at is on the horizon's axis: a cooldown
// that ends at the clock's u is due at u minus the grace.
type expiry struct {
	at      time.Time
	proxyID string
	leaseID string
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// countChange moves a proxy's counted contribution from old to new (either
// may be nil) at the counts' current time, and schedules the new holders'
// expiries. Callers hold r.mu.
func (r *Replica) countChange(old, new *proxyEntry) {
	if old != nil {
		r.countsFor(old.rec.PoolID).add(old.counted, -1)
		if old.counted.pickable {
			r.indexFor(old.rec.PoolID).remove(old)
		}
		r.consumers.count(old.rec, r.countsAt, -1)
	}
	if new == nil {
		return
	}
	new.counted = r.contribution(new.rec, r.countsAt)
	r.countsFor(new.rec.PoolID).add(new.counted, +1)
	r.consumers.count(new.rec, r.countsAt, +1)
	if new.counted.pickable {
		r.indexFor(new.rec.PoolID).insert(new)
	}
	if new.counted.cooling && (old == nil || !old.counted.cooling || !sameTime(old.rec.CooldownUntil, new.rec.CooldownUntil)) {
		heap.Push(&r.expiries, expiry{at: new.rec.CooldownUntil.Add(-r.grace), proxyID: new.rec.ID})
	}
	for _, h := range new.rec.Holders {
		if !h.ExpiresAt.After(r.countsAt) {
			continue
		}
		if old != nil {
			if i := old.rec.Holder(h.LeaseID); i >= 0 && old.rec.Holders[i].ExpiresAt.Equal(h.ExpiresAt) {
				continue // already scheduled
			}
		}
		heap.Push(&r.expiries, expiry{at: h.ExpiresAt, proxyID: new.rec.ID, leaseID: h.LeaseID})
	}
}

// Advance brings the counts and indexes to horizon by applying, in order,
// every lease expiry and cooldown end up to it, and returns the proxies
// whose slots those freed, once each. No write tells of a lease that runs
// out or a cooldown that ends, so the caller tells whoever waits for a
// slot (as it does for an installed version). Picks and stats read the
// counts as they are: advance first.
func (r *Replica) Advance(horizon time.Time) []*record.Proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !horizon.After(r.countsAt) {
		return nil
	}
	var freed []*record.Proxy
	var seen map[string]bool
	var ended map[string]bool // leases whose expiry the consumer counts took, against a repeated heap entry
	for len(r.expiries) > 0 && !r.expiries[0].at.After(horizon) {
		x := heap.Pop(&r.expiries).(expiry)
		e := r.proxies[x.proxyID]
		if e == nil {
			continue
		}
		if x.leaseID == "" {
			// A cooldown's end: only the version that set it still counts it.
			if !e.counted.cooling || !e.rec.CooldownUntil.Add(-r.grace).Equal(x.at) {
				continue
			}
		} else {
			i := e.rec.Holder(x.leaseID)
			if i < 0 {
				continue
			}
			if h := &e.rec.Holders[i]; h.ExpiresAt.Equal(x.at) && !ended[h.LeaseID] {
				// The holder's own expiry (not one it had before a renew).
				if ended == nil {
					ended = map[string]bool{}
				}
				ended[h.LeaseID] = true
				r.consumers.add(h.ConsumerName, -1)
			}
		}
		c := r.countsFor(e.rec.PoolID)
		c.add(e.counted, -1)
		if e.counted.pickable {
			r.indexFor(e.rec.PoolID).remove(e)
		}
		e.counted = r.contribution(e.rec, x.at)
		c.add(e.counted, +1)
		if e.counted.pickable {
			r.indexFor(e.rec.PoolID).insert(e)
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		if !seen[e.rec.ID] {
			seen[e.rec.ID] = true
			freed = append(freed, e.rec)
		}
	}
	r.countsAt = horizon
	return freed
}

func (r *Replica) indexFor(poolID string) *poolIndex {
	ix := r.index[poolID]
	if ix == nil {
		ix = newPoolIndex()
		r.index[poolID] = ix
	}
	return ix
}

// Query is what an acquire asks of the pool's available proxies.
type Query struct {
	Pool     string
	Selector model.Selector
	Filters  *model.ProxyFilters
	// After is the round-robin position: the added order of the proxy this
	// worker handed out last.
	After uint64
	// Exclude are proxy ids never to pick; they are passed over as the
	// pick meets them, so they cost what they are, not the pool's size.
	Exclude map[string]struct{}
}

// Pick chooses one of the pool's available proxies (active and below their
// limit as of the last Advance) by the query's selector and filters, from
// the indexes: candidates, not the whole pool, are looked at. ok vets each
// candidate the caller would take; a rejected one is passed over.
func (r *Replica) Pick(q Query, ok func(*record.Proxy) bool) *record.Proxy {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if ix := r.index[r.poolID(q.Pool)]; ix != nil {
		return ix.pick(q.Selector, q.Filters, q.After, q.Exclude, ok)
	}
	return nil
}

// NextExpiry is the earliest moment a counted lease expires or a cooldown
// ends (on the horizon's axis: a cooldown's end minus the grace), if any.
func (r *Replica) NextExpiry() (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.expiries) == 0 {
		return time.Time{}, false
	}
	return r.expiries[0].at, true
}

func (r *Replica) countsFor(poolID string) *poolCounts {
	c := r.counts[poolID]
	if c == nil {
		c = &poolCounts{}
		r.counts[poolID] = c
	}
	return c
}

// StatsWith returns the statistics rec's pool will have once rec is
// installed (its version replacing the one the replica holds), as of the
// last Advance, collected at now: the snapshot an event of the write of rec
// carries, taken before the write.
func (r *Replica) StatsWith(rec *record.Proxy, now time.Time) model.PoolStatsSnapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := r.poolCounts(rec.PoolID)
	if old := r.proxies[rec.ID]; old != nil && old.rec.PoolID == rec.PoolID {
		c.add(old.counted, -1)
	}
	c.add(r.contribution(rec, r.countsAt), +1)
	return c.snapshot(rec.PoolName, now)
}

// StatsWithout returns the statistics of proxy id's pool once it is
// deleted, as StatsWith does.
func (r *Replica) StatsWithout(id string, now time.Time) (model.PoolStatsSnapshot, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	old := r.proxies[id]
	if old == nil {
		return model.PoolStatsSnapshot{}, false
	}
	c := r.poolCounts(old.rec.PoolID)
	c.add(old.counted, -1)
	return c.snapshot(old.rec.PoolName, now), true
}

func (r *Replica) poolCounts(poolID string) poolCounts {
	if c := r.counts[poolID]; c != nil {
		return *c
	}
	return poolCounts{}
}

func (c poolCounts) snapshot(pool string, now time.Time) model.PoolStatsSnapshot {
	return model.PoolStatsSnapshot{PoolName: pool, CollectedAt: now, TotalProxies: c.total, ActiveProxies: c.active,
		AvailableProxies: c.available, LeasedProxies: c.leased, TotalLeases: c.leases, CoolingProxies: c.cooling}
}

// Stats returns a pool's statistics as of the last Advance, collected at
// now. They are kept incrementally, so they cost the same whatever the
// pool's size.
func (r *Replica) Stats(pool string, now time.Time) model.PoolStatsSnapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.poolCounts(r.poolID(pool)).snapshot(pool, now)
}

func sameTime(a, b *time.Time) bool {
	return a == b || (a != nil && b != nil && a.Equal(*b))
}
