package kvstore

import (
	"context"
	"time"

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

// LocalPoolStats computes a pool's statistics from the replica as it is,
// which includes this worker's own writes: the snapshot events carry.
func (s *Store) LocalPoolStats(poolName string) model.PoolStatsSnapshot {
	now := s.Now()
	st := model.PoolStatsSnapshot{PoolName: poolName, CollectedAt: now}
	s.replica.scanMembers(poolName, func(e *proxyEntry) bool {
		addToStats(&st, e.rec, now)
		return true
	})
	return st
}

func addToStats(st *model.PoolStatsSnapshot, rec *ProxyRecord, now time.Time) {
	st.TotalProxies++
	live := rec.LiveHolders(now)
	if live > 0 {
		st.LeasedProxies++
	}
	st.TotalLeases += live
	if rec.Status == model.ProxyActive {
		st.ActiveProxies++
		if rec.MaxConcurrency == nil || live < *rec.MaxConcurrency {
			st.AvailableProxies++
		}
	}
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
