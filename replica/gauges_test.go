package replica

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// TestGaugesMatchBruteForce drives the replica with random proxy versions
// of every status (and one no contract version has), deletions and moves
// between pools, and checks after every step that each pool's gauges are
// its statistics and a full count of its proxies by status.
func TestGaugesMatchBruteForce(t *testing.T) {
	statuses := []model.ProxyStatus{model.ProxyActive, model.ProxyInactive, model.ProxySlow, model.ProxyBanned, "quarantined"}
	for seed := uint64(1); seed <= 10; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		r := withPools(New(), "a", "b")
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for step := uint64(1); step <= 300; step++ {
			n := rng.IntN(10)
			id := fmt.Sprintf("p%d", n)
			if rng.IntN(6) == 0 {
				r.InstallProxy(id, nil, step)
			} else {
				pool := []string{"a", "b"}[rng.IntN(2)]
				r.InstallProxy(id, &record.Proxy{ID: id, PoolID: pool, PoolName: pool, Seq: uint64(n + 1), Status: statuses[rng.IntN(len(statuses))]}, step)
			}
			r.Advance(now)
			gauges := r.Gauges(now)
			require.Len(t, gauges, 2)
			for _, g := range gauges {
				pool := g.Stats.PoolName
				want := map[model.ProxyStatus]int{model.ProxyActive: 0, model.ProxyInactive: 0, model.ProxySlow: 0, model.ProxyBanned: 0}
				r.Members(pool, 0, func(rec *record.Proxy) bool {
					st := rec.Status
					if _, known := want[st]; !known {
						st = "other"
					}
					want[st]++
					return true
				})
				require.Equal(t, want, g.ByStatus, "seed %d step %d pool %s", seed, step, pool)
				require.Equal(t, r.Stats(pool, now), g.Stats)
			}
		}
	}
}
