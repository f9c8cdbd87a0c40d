package kvstore

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestCountsMatchBruteForce drives the replica with random proxy versions,
// deletions and the passing of time, and checks after every step that the
// incremental pool counts equal a full scan of the pool.
func TestCountsMatchBruteForce(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			r := newReplica()
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			rev := uint64(0)
			pools := []string{"a", "b"}
			statuses := []model.ProxyStatus{model.ProxyActive, model.ProxyActive, model.ProxyInactive, model.ProxyBanned}
			for step := 0; step < 400; step++ {
				rev++
				n := rng.IntN(12)
				id := fmt.Sprintf("p%d", n)
				switch op := rng.IntN(10); {
				case op < 6:
					rec := &ProxyRecord{ID: id, PoolName: pools[rng.IntN(2)], Seq: uint64(n + 1), Status: statuses[rng.IntN(4)]}
					if old := r.proxy(id); old != nil {
						rec.PoolName, rec.Seq = old.rec.PoolName, old.rec.Seq
						rec.Holders = append(rec.Holders, old.rec.Holders...)
					}
					if rng.IntN(3) == 0 {
						m := 1 + rng.IntN(3)
						rec.MaxConcurrency = &m
					}
					for k := rng.IntN(3); k > 0; k-- {
						rec.Holders = append(rec.Holders, Holder{LeaseID: fmt.Sprintf("l%d", rev*10+uint64(k)), ExpiresAt: now.Add(time.Duration(rng.IntN(20)) * time.Second)})
					}
					if len(rec.Holders) > 0 && rng.IntN(3) == 0 {
						rec.Holders = rec.Holders[1:]
					}
					if len(rec.Holders) > 0 && rng.IntN(4) == 0 { // a renew
						rec.Holders[0].ExpiresAt = now.Add(time.Duration(rng.IntN(30)) * time.Second)
					}
					r.applyProxy(id, rec, rev, true)
				case op < 7:
					r.applyProxy(id, nil, rev, true)
				default:
					now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
				}
				for _, pool := range pools {
					got := r.stats(pool, now, now)
					want := model.PoolStatsSnapshot{PoolName: pool, CollectedAt: now}
					r.scanMembers(pool, func(e *proxyEntry) bool {
						live := e.rec.LiveHolders(now)
						want.TotalProxies++
						want.TotalLeases += live
						if live > 0 {
							want.LeasedProxies++
						}
						if e.rec.Status == model.ProxyActive {
							want.ActiveProxies++
							if e.rec.MaxConcurrency == nil || live < *e.rec.MaxConcurrency {
								want.AvailableProxies++
							}
						}
						return true
					})
					require.Equal(t, want, got, "step %d pool %s", step, pool)
				}
			}
		})
	}
}
