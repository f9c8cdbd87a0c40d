package manager

import (
	"context"

	"github.com/pharox/pharox-nats/model"
)

// PoolStats reads a pool's statistics after bringing the replica up to every
// write acknowledged before the call.
func (m *Manager) PoolStats(ctx context.Context, pool string) (model.PoolStatsSnapshot, error) {
	if err := model.CheckName("pool_name", pool); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	if err := m.syncPool(ctx, pool); err != nil {
		return model.PoolStatsSnapshot{}, err
	}
	st := m.localStats(pool)
	return *st, nil
}

// localStats is a pool's statistics from the replica as it is, which
// includes this worker's own writes: the snapshot events carry, taken right
// after the change. It costs the same whatever the pool's size.
func (m *Manager) localStats(pool string) *model.PoolStatsSnapshot {
	m.advance()
	st := m.replica.Stats(pool, m.now())
	return &st
}
