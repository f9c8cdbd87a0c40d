package replica

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/credkey"
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
			consumers := []string{"c0", "c1", "c2"}
			firstExpiry := map[string]time.Time{}
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
						rec.Holders = append(rec.Holders, record.Holder{LeaseID: fmt.Sprintf("l%d", rev*10+uint64(k)), ExpiresAt: now.Add(time.Duration(rng.IntN(20)) * time.Second),
							ConsumerName: consumers[rng.IntN(len(consumers))]})
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
					if len(rec.Holders) > 0 && rng.IntN(8) == 0 { // a renew back to an expiry it had before
						rec.Holders[0].ExpiresAt = firstExpiry[rec.Holders[0].LeaseID]
					}
					for _, h := range rec.Holders {
						if _, ok := firstExpiry[h.LeaseID]; !ok {
							firstExpiry[h.LeaseID] = h.ExpiresAt
						}
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
				// Each consumer's active leases, over both pools, at the
				// counts' horizon (a lease counts for the grace after its
				// expiry, as it does for its proxy's limit).
				want := map[string]int{}
				for _, pool := range pools {
					r.Members(pool, 0, func(rec *record.Proxy) bool {
						for _, h := range rec.Holders {
							if h.ExpiresAt.After(now.Add(-grace)) {
								want[h.ConsumerName]++
							}
						}
						return true
					})
				}
				for _, c := range consumers {
					require.Equal(t, want[c], r.ConsumerLeases(c), "step %d: active leases of %s", step, c)
				}
			}
		})
	}
}

// TestUnreadableProxyIsNeverPicked installs a proxy whose credentials are
// sealed under a key this replica's worker lacks: it counts in the pool's
// statistics as on every other worker, and is never proposed; once a
// version this worker can read is installed, it is.
func TestUnreadableProxyIsNeverPicked(t *testing.T) {
	ring, err := credkey.ParseList(mustKey(t), "test")
	require.NoError(t, err)
	r := withPools(New(), "a")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := &record.Proxy{ID: "p1", PoolID: "a", PoolName: "a", Seq: 1, Status: model.ProxyActive,
		Credentials: &model.Credentials{User: "u", Password: "pw"}}
	sealed := record.NewCodec(ring).Encode(in)
	unreadable, err := record.DecodeProxy(sealed) // a worker without the key
	require.NoError(t, err)
	require.True(t, unreadable.CredentialsUnreadable())
	r.InstallProxy("p1", unreadable, 1)

	anyProxy := func(*record.Proxy) bool { return true }
	st := stats(r, "a", now)
	require.Equal(t, 1, st.AvailableProxies, "the statistics are the pool's, the same on every worker")
	for _, sel := range []model.Selector{model.SelectorFirstAvailable, model.SelectorLeastUsed, model.SelectorRoundRobin, model.SelectorRandom} {
		require.Nil(t, r.Pick(Query{Pool: "a", Selector: sel}, anyProxy), "%s proposed an unreadable proxy", sel)
	}

	readable, err := record.NewCodec(ring).Decode(sealed)
	require.NoError(t, err)
	require.False(t, readable.CredentialsUnreadable())
	r.InstallProxy("p1", readable, 2)
	got := r.Pick(Query{Pool: "a", Selector: model.SelectorFirstAvailable}, anyProxy)
	require.NotNil(t, got)
	require.Equal(t, "pw", got.Credentials.Password)
}

func mustKey(t *testing.T) string {
	t.Helper()
	k, err := credkey.Generate()
	require.NoError(t, err)
	return k
}
