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

// TestCountsMatchBruteForce drives the replica with random proxy versions
// (leases, limits, cooldowns), deletions and the passing of time, and
// checks after every step that the incremental pool counts equal a full
// scan of the pool.
func TestCountsMatchBruteForce(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			grace := time.Duration(seed%2) * 500 * time.Millisecond
			r := withPools(New(WithGrace(grace)), "a", "b")
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
					pool := pools[rng.IntN(2)]
					rec := &record.Proxy{ID: id, PoolID: pool, PoolName: pool, Seq: uint64(n + 1), Status: statuses[rng.IntN(4)]}
					if old, _, ok := r.Proxy(id); ok {
						rec.PoolID, rec.PoolName, rec.Seq = old.PoolID, old.PoolName, old.Seq
						rec.Holders = append(rec.Holders, old.Holders...)
					}
					if rng.IntN(3) == 0 {
						m := 1 + rng.IntN(3)
						rec.MaxConcurrency = &m
					}
					for k := rng.IntN(3); k > 0; k-- {
						rec.Holders = append(rec.Holders, record.Holder{LeaseID: fmt.Sprintf("l%d", rev*10+uint64(k)), ExpiresAt: now.Add(time.Duration(rng.IntN(20)) * time.Second)})
					}
					if len(rec.Holders) > 0 && rng.IntN(3) == 0 {
						rec.Holders = rec.Holders[1:]
					}
					if old, _, ok := r.Proxy(id); ok && rng.IntN(2) == 0 {
						rec.CooldownUntil = old.CooldownUntil // kept, as most writes do
					}
					if rng.IntN(4) == 0 {
						until := now.Add(time.Duration(rng.IntN(12000)-2000) * time.Millisecond)
						rec.CooldownUntil = &until
					}
					if len(rec.Holders) > 0 && rng.IntN(4) == 0 { // a renew
						rec.Holders[0].ExpiresAt = now.Add(time.Duration(rng.IntN(30)) * time.Second)
					}
					r.InstallProxy(id, rec, rev)
				case op < 7:
					r.InstallProxy(id, nil, rev)
				default:
					now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
				}
				for _, pool := range pools {
					got := stats(r, pool, now.Add(-grace))
					got.CollectedAt = now
					want := model.PoolStatsSnapshot{PoolName: pool, CollectedAt: now}
					r.Members(pool, 0, func(rec *record.Proxy) bool {
						live := rec.LiveHolders(now.Add(-grace))
						want.TotalProxies++
						want.TotalLeases += live
						if live > 0 {
							want.LeasedProxies++
						}
						if rec.Status == model.ProxyActive {
							want.ActiveProxies++
							cooling := rec.Cooling(now)
							if cooling {
								want.CoolingProxies++
							}
							if !cooling && (rec.MaxConcurrency == nil || live < *rec.MaxConcurrency) {
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
