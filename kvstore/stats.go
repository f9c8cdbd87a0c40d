package kvstore

import (
	"context"

	"github.com/pharox/pharox-nats/model"
)

// PoolStats reads a pool's statistics after bringing the replica up to every
// write acknowledged before the call.
func (s *Store) PoolStats(ctx context.Context, poolName string) (model.PoolStatsSnapshot, error) {
	if _, err := s.PoolExists(ctx, poolName); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	if err := s.syncReplica(ctx, s.proxies); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	return s.LocalPoolStats(poolName), nil
}

// LocalPoolStats returns a pool's statistics from the replica as it is,
// which includes this worker's own writes: the snapshot events carry. It is
// kept incrementally, so it costs the same whatever the pool's size.
func (s *Store) LocalPoolStats(poolName string) model.PoolStatsSnapshot {
	return s.replica.stats(poolName, s.Now())
}

// Candidates calls fn on the pool's proxies in added order, as the replica
// knows them, until fn returns false.
func (s *Store) Candidates(poolName string, fn func(rec *ProxyRecord) bool) {
	s.replica.scanMembers(poolName, func(e *proxyEntry) bool { return fn(e.rec) })
}

// SyncProxies brings the replica up to every proxy write acknowledged before
// the call; an answer of "nothing free" rests on it.
func (s *Store) SyncProxies(ctx context.Context) error {
	return s.syncReplica(ctx, s.proxies)
}
