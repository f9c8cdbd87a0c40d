package kvstore

import (
	"context"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// PoolStats reads a pool's statistics after bringing the replica up to every
// write acknowledged before the call.
func (s *Store) PoolStats(ctx context.Context, poolName string) (model.PoolStatsSnapshot, error) {
	if err := s.syncPool(ctx, poolName); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	return s.LocalPoolStats(poolName), nil
}

// LocalPoolStats returns a pool's statistics from the replica as it is,
// which includes this worker's own writes: the snapshot events carry. It is
// kept incrementally, so it costs the same whatever the pool's size.
func (s *Store) LocalPoolStats(poolName string) model.PoolStatsSnapshot {
	return s.replica.stats(poolName, s.Horizon(), s.Now())
}

// Candidates calls fn on the pool's proxies in added order, as the replica
// knows them, until fn returns false.
func (s *Store) Candidates(poolName string, fn func(rec *ProxyRecord) bool) {
	s.replica.scanMembers(poolName, func(e *proxyEntry) bool { return fn(e.rec) })
}

// syncPool brings the replica up to every pool and proxy write acknowledged
// before the call and checks that the pool exists.
func (s *Store) syncPool(ctx context.Context, poolName string) error {
	if err := s.syncReplica(ctx, s.pools); err != nil {
		return err
	}
	if s.replica.pool(poolName) == nil {
		return poolNotFound(poolName)
	}
	return s.syncReplica(ctx, s.proxies)
}

// Pick chooses an available proxy of the pool by the selector and filters,
// from the replica's indexes: candidates, not the whole pool, are looked at.
// ok vets each candidate (this worker's in-flight writes, a last room
// check); after is the round-robin position.
func (s *Store) Pick(pool string, sel model.Selector, f *model.ProxyFilters, after uint64, ok func(*ProxyRecord) bool) *ProxyRecord {
	return s.replica.pick(pool, sel, f, after, s.Horizon(), ok)
}

// NextFreeing is when the earliest lease the replica counts stops counting
// (its expiry plus the grace), as a duration from now: slots free up then
// without any write. ok is false when no lease is counted.
func (s *Store) NextFreeing() (time.Duration, bool) {
	at, ok := s.replica.nextExpiry()
	if !ok {
		return 0, false
	}
	return max(at.Add(s.opts.grace).Sub(s.Now()), time.Millisecond), true
}

// AdvanceExpiries counts every lease expired by now. Their slots free up
// without any write, so the proxies they held are passed to the change hook
// (OnProxyChange), once per expiry, as a write would be.
func (s *Store) AdvanceExpiries() {
	r := s.replica
	r.mu.Lock()
	freed := r.advanceCounts(s.Horizon())
	r.mu.Unlock()
	r.notify(freed)
}

// OnProxyChange registers fn to be told of every proxy version the replica
// installs (from the watch or from this worker's own writes). fn must not
// block.
func (s *Store) OnProxyChange(fn func(*ProxyRecord)) {
	s.replica.mu.Lock()
	defer s.replica.mu.Unlock()
	s.replica.onChange = fn
}

// SyncProxies brings the replica up to every proxy write acknowledged before
// the call; an answer of "nothing free" rests on it.
func (s *Store) SyncProxies(ctx context.Context) error {
	return s.syncReplica(ctx, s.proxies)
}
