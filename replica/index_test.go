package replica

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

var (
	testCountries = []string{"AR", "BR", "CL", "US", "DE"}
	testCities    = []string{"a", "b", "c"}
	testProtocols = []model.Protocol{model.ProtocolHTTP, model.ProtocolHTTP, model.ProtocolHTTPS, model.ProtocolSOCKS4, model.ProtocolSOCKS5}
	testLatencies = []float64{0, 12.5, 40, 40, 250, 3000}
)

func ptr[T any](v T) *T { return &v }

// randomRecord makes a proxy of pool "p" with random attributes, status,
// limit, holders, latency and cooldown around t0.
func randomRecord(rng *rand.Rand, seq uint64, t0 time.Time) *record.Proxy {
	statuses := []model.ProxyStatus{model.ProxyActive, model.ProxyActive, model.ProxyActive, model.ProxyInactive, model.ProxySlow, model.ProxyBanned}
	r := &record.Proxy{ID: fmt.Sprintf("x%d", seq), PoolID: "p", PoolName: "p", Seq: seq, Status: statuses[rng.IntN(len(statuses))],
		Protocol: testProtocols[rng.IntN(len(testProtocols))]}
	if rng.IntN(3) > 0 {
		r.Health = &record.Health{LatencyMs: testLatencies[rng.IntN(len(testLatencies))] + float64(rng.IntN(2))/8}
	}
	if rng.IntN(4) == 0 {
		until := t0.Add(time.Duration(rng.IntN(20)-5) * time.Second)
		r.CooldownUntil = &until
		r.ConsecutiveFailures = 1 + rng.IntN(5)
	}
	if rng.IntN(5) > 0 {
		r.Country = ptr(testCountries[rng.IntN(len(testCountries))])
	}
	if rng.IntN(3) > 0 {
		r.City = ptr(testCities[rng.IntN(len(testCities))])
	}
	if rng.IntN(3) == 0 {
		r.Source = ptr(fmt.Sprintf("src%d", rng.IntN(3)))
	}
	if rng.IntN(3) == 0 {
		r.ISP = ptr(fmt.Sprintf("isp%d", rng.IntN(3)))
	}
	if rng.IntN(3) == 0 {
		r.ASN = ptr(int64(rng.IntN(3)))
	}
	if rng.IntN(4) > 0 {
		r.Latitude = ptr(rng.Float64()*180 - 90)
		r.Longitude = ptr(rng.Float64()*360 - 180)
		if rng.IntN(10) == 0 {
			r.Longitude = ptr(180.0)
		}
	}
	if rng.IntN(2) == 0 {
		r.MaxConcurrency = ptr(1 + rng.IntN(3))
	}
	for k := rng.IntN(4); k > 0; k-- {
		r.Holders = append(r.Holders, record.Holder{LeaseID: fmt.Sprintf("l%d-%d", seq, k), ExpiresAt: t0.Add(time.Duration(rng.IntN(20)-5) * time.Second)})
	}
	return r
}

// randomFilter makes a filter tree of bounded depth from the same values.
func randomFilter(rng *rand.Rand, depth int) *model.ProxyFilters {
	f := &model.ProxyFilters{}
	if rng.IntN(4) == 0 {
		for k := 1 + rng.IntN(3); k > 0; k-- {
			f.Protocol = append(f.Protocol, testProtocols[rng.IntN(len(testProtocols))])
		}
	}
	if rng.IntN(3) == 0 {
		f.Country = ptr(testCountries[rng.IntN(len(testCountries))])
	}
	if rng.IntN(5) == 0 {
		f.City = ptr(testCities[rng.IntN(len(testCities))])
	}
	if rng.IntN(8) == 0 {
		f.Source = ptr(fmt.Sprintf("src%d", rng.IntN(3)))
	}
	if rng.IntN(8) == 0 {
		f.ASN = ptr(int64(rng.IntN(3)))
	}
	if rng.IntN(4) == 0 {
		f.Latitude = ptr(rng.Float64()*180 - 90)
		f.Longitude = ptr(rng.Float64()*360 - 180)
		f.RadiusKm = ptr([]float64{50, 500, 3000, 9000}[rng.IntN(4)])
	}
	if depth < 3 {
		for _, group := range []*[]model.ProxyFilters{&f.AllOf, &f.AnyOf, &f.NoneOf} {
			if rng.IntN(5) == 0 {
				for k := 1 + rng.IntN(2); k > 0; k-- {
					*group = append(*group, *randomFilter(rng, depth+1))
				}
			}
		}
	}
	return f
}

// TestPickMatchesBruteForce checks every selector on the indexes against a
// scan of the whole pool, over random pools (with latencies, protocols and
// cooldowns), random filter trees and random exclusions.
func TestPickMatchesBruteForce(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := uint64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		grace := time.Duration(rng.IntN(2)) * time.Second
		r := withPools(New(WithGrace(grace)), "p")
		n := 20 + rng.IntN(300)
		for i := 1; i <= n; i++ {
			rec := randomRecord(rng, uint64(i), t0)
			r.InstallProxy(rec.ID, rec, uint64(i))
		}
		horizon := t0.Add(time.Duration(rng.IntN(8)) * time.Second)
		var members []*record.Proxy
		r.Members("p", 0, func(rec *record.Proxy) bool { members = append(members, rec); return true })
		for q := 0; q < 60; q++ {
			f := randomFilter(rng, 1)
			if q%7 == 0 {
				f = nil
			}
			if f != nil {
				require.NoError(t, f.Validate())
			}
			var exclude map[string]struct{}
			if q%3 == 0 {
				exclude = map[string]struct{}{"unknown": {}}
				for k := rng.IntN(20); k > 0; k-- {
					exclude[members[rng.IntN(len(members))].ID] = struct{}{}
				}
			}
			eligible := func(rec *record.Proxy) bool {
				_, out := exclude[rec.ID]
				return !out && rec.Status == model.ProxyActive && rec.HasRoom(horizon) &&
					!rec.Cooling(horizon.Add(grace)) && f.Matches(rec.Attrs())
			}
			var want []*record.Proxy
			for _, rec := range members {
				if eligible(rec) {
					want = append(want, rec)
				}
			}
			ok := func(rec *record.Proxy) bool { return rec.HasRoom(horizon) }
			desc := fmt.Sprintf("seed %d query %d filters %+v exclude %d", seed, q, f, len(exclude))
			pick := func(sel model.Selector, after uint64) *record.Proxy {
				r.Advance(horizon)
				return r.Pick(Query{Pool: "p", Selector: sel, Filters: f, After: after, Exclude: exclude}, ok)
			}

			got := pick(model.SelectorFirstAvailable, 0)
			if len(want) == 0 {
				require.Nil(t, got, desc)
				require.Nil(t, pick(model.SelectorRandom, 0), desc)
				require.Nil(t, pick(model.SelectorLowestLatency, 0), desc)
				continue
			}
			require.NotNil(t, got, desc)
			require.Equal(t, want[0].ID, got.ID, "first_available "+desc)

			least := want[0]
			for _, w := range want {
				if w.LiveHolders(horizon) < least.LiveHolders(horizon) {
					least = w
				}
			}
			got = pick(model.SelectorLeastUsed, 0)
			require.Equal(t, least.ID, got.ID, "least_used "+desc)

			fastest := want[0]
			latency := func(rec *record.Proxy) float64 {
				if ms, ok := rec.Latency(); ok {
					return ms
				}
				return math.Inf(1)
			}
			for _, w := range want {
				if latency(w) < latency(fastest) {
					fastest = w
				}
			}
			got = pick(model.SelectorLowestLatency, 0)
			require.Equal(t, fastest.ID, got.ID, "lowest_latency "+desc)

			after := want[rng.IntN(len(want))].Seq
			next := want[0]
			for _, w := range want {
				if w.Seq > after {
					next = w
					break
				}
			}
			got = pick(model.SelectorRoundRobin, after)
			require.Equal(t, next.ID, got.ID, "round_robin after %d %s", after, desc)

			got = pick(model.SelectorRandom, 0)
			require.NotNil(t, got, desc)
			require.True(t, eligible(got), "random "+desc)
		}
	}
}

// withPools installs pools whose ids are their names.
func withPools(r *Replica, names ...string) *Replica {
	for i, name := range names {
		r.InstallPool(name, &record.Pool{ID: name, Name: name}, uint64(i+1))
	}
	return r
}

// TestCooldownEndsWithoutWrite: a cooling proxy is out of every index until
// its cooldown_until passes on the clock (the horizon plus the grace), then
// Advance returns it among the freed, with no new version installed.
func TestCooldownEndsWithoutWrite(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const grace = time.Second
	r := withPools(New(WithGrace(grace)), "p")
	until := t0.Add(10 * time.Second)
	rec := &record.Proxy{ID: "x1", PoolID: "p", PoolName: "p", Seq: 1, Status: model.ProxyActive, CooldownUntil: &until, ConsecutiveFailures: 3}
	r.InstallProxy(rec.ID, rec, 1)
	other := &record.Proxy{ID: "x2", PoolID: "p", PoolName: "p", Seq: 2, Status: model.ProxyInactive, CooldownUntil: &until}
	r.InstallProxy(other.ID, other, 2)
	all := func(*record.Proxy) bool { return true }

	require.Empty(t, r.Advance(t0.Add(-grace)))
	st := r.Stats("p", t0)
	require.Equal(t, 1, st.CoolingProxies, "only active proxies count as cooling")
	require.Equal(t, 1, st.ActiveProxies)
	require.Zero(t, st.AvailableProxies)
	for _, sel := range []model.Selector{model.SelectorFirstAvailable, model.SelectorLeastUsed, model.SelectorLowestLatency, model.SelectorRoundRobin, model.SelectorRandom} {
		require.Nil(t, r.Pick(Query{Pool: "p", Selector: sel}, all), sel)
	}
	next, ok := r.NextExpiry()
	require.True(t, ok)
	require.Equal(t, until.Add(-grace), next, "due on the horizon's axis")

	require.Empty(t, r.Advance(until.Add(-grace-time.Millisecond)), "still cooling a millisecond before")
	require.Nil(t, r.Pick(Query{Pool: "p"}, all))
	freed := r.Advance(until.Add(-grace))
	require.Len(t, freed, 1)
	require.Equal(t, "x1", freed[0].ID)
	st = r.Stats("p", until)
	require.Zero(t, st.CoolingProxies)
	require.Equal(t, 1, st.AvailableProxies)
	require.Equal(t, "x1", r.Pick(Query{Pool: "p", Selector: model.SelectorLowestLatency}, all).ID)

	// A later version that moves the cooldown: the old end no longer counts.
	later := until.Add(5 * time.Second)
	moved := *rec
	moved.CooldownUntil = &later
	r.InstallProxy(moved.ID, &moved, 3)
	require.Nil(t, r.Pick(Query{Pool: "p"}, all))
	require.Empty(t, r.Advance(later.Add(-grace-time.Millisecond)))
	require.Len(t, r.Advance(later.Add(-grace)), 1)
}

// pick advances r to horizon and picks as an acquire would.
func pick(r *Replica, pool string, sel model.Selector, f *model.ProxyFilters, after uint64, horizon time.Time, ok func(*record.Proxy) bool) *record.Proxy {
	r.Advance(horizon)
	return r.Pick(Query{Pool: pool, Selector: sel, Filters: f, After: after}, ok)
}

// stats advances r to t and reads the pool's statistics.
func stats(r *Replica, pool string, t time.Time) model.PoolStatsSnapshot {
	r.Advance(t)
	return r.Stats(pool, t)
}

// TestRandomPickIsUniform checks that random spreads over the eligible
// proxies rather than favouring some.
func TestRandomPickIsUniform(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := withPools(New(), "p")
	for i := 1; i <= 10; i++ {
		rec := &record.Proxy{ID: fmt.Sprintf("x%d", i), PoolID: "p", PoolName: "p", Seq: uint64(i), Status: model.ProxyActive}
		r.InstallProxy(rec.ID, rec, uint64(i))
	}
	seen := map[string]int{}
	for i := 0; i < 10000; i++ {
		seen[pick(r, "p", model.SelectorRandom, nil, 0, t0, func(*record.Proxy) bool { return true }).ID]++
	}
	require.Len(t, seen, 10)
	for id, n := range seen {
		require.InDelta(t, 1000, n, 200, id)
	}
}

// pickBenchProxies is the size of each of BenchmarkPick's pools.
const pickBenchProxies = 100000

// pickCase is one pick BenchmarkPick measures, at the replica's time at.
type pickCase struct {
	name string
	pool string
	sel  model.Selector
	f    *model.ProxyFilters
	at   time.Time
}

// run picks for c from the round-robin position after.
func (c pickCase) run(r *Replica, after uint64) *record.Proxy {
	return pick(r, c.pool, c.sel, c.f, after, c.at, func(*record.Proxy) bool { return true })
}

// pickBench is a replica with two pools of n proxies each whose first 99%
// are full, the case a scan of the pool would pay for; "cooling" is the same
// pool with every tenth proxy cooling down besides. It returns the cases
// BenchmarkPick measures on them.
func pickBench(n int) (*Replica, []pickCase) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := withPools(New(), "p", "cooling")
	coolUntil := t0.Add(time.Hour)
	for _, pool := range []string{"p", "cooling"} {
		for i := 1; i <= n; i++ {
			one := 1
			lat, lon := float64(i%180)-89.5, float64((i/180)%360)-179.5
			rec := &record.Proxy{ID: fmt.Sprintf("%s%d", pool, i), PoolID: pool, PoolName: pool, Seq: uint64(i), Status: model.ProxyActive,
				Protocol: testProtocols[i%len(testProtocols)], MaxConcurrency: &one, Country: ptr(fmt.Sprintf("C%02d", i%50)),
				Latitude: &lat, Longitude: &lon, Health: &record.Health{LatencyMs: float64(i % 997)}}
			if i < n*99/100 {
				rec.Holders = []record.Holder{{LeaseID: "h", ExpiresAt: t0.Add(time.Hour)}}
			}
			if pool == "cooling" && i%10 == 0 {
				rec.CooldownUntil, rec.ConsecutiveFailures = &coolUntil, 3
			}
			r.InstallProxy(rec.ID, rec, uint64(i))
		}
	}
	country := &model.ProxyFilters{Country: ptr("C07")}
	geo := &model.ProxyFilters{Latitude: ptr(10.0), Longitude: ptr(20.0), RadiusKm: ptr(500.0)}
	socks := &model.ProxyFilters{Protocol: model.Protocols{model.ProtocolSOCKS4, model.ProtocolSOCKS5}}
	var cases []pickCase
	for _, pool := range []string{"p", "cooling"} {
		prefix := ""
		if pool != "p" {
			prefix = pool + "/"
		}
		for _, c := range []pickCase{
			{"first_available", pool, model.SelectorFirstAvailable, nil, t0},
			{"least_used", pool, model.SelectorLeastUsed, nil, t0},
			{"lowest_latency", pool, model.SelectorLowestLatency, nil, t0},
			{"round_robin", pool, model.SelectorRoundRobin, nil, t0},
			{"random", pool, model.SelectorRandom, nil, t0},
			{"country", pool, model.SelectorFirstAvailable, country, t0},
			{"geo_500km", pool, model.SelectorFirstAvailable, geo, t0},
			{"protocol_socks", pool, model.SelectorFirstAvailable, socks, t0},
		} {
			c.name = prefix + c.name
			cases = append(cases, c)
		}
	}
	return r, cases
}

// TestPickBenchPicks: every case BenchmarkPick measures finds a free proxy
// (on the benchmark's own pools), so the benchmark measures picks, not
// misses. It failed every case of pool "p" once proxies were grouped by
// pool id and the benchmark's records had none, and nothing ran the
// benchmark to see.
func TestPickBenchPicks(t *testing.T) {
	r, cases := pickBench(pickBenchProxies)
	for _, c := range cases {
		for i := 0; i < 50; i++ {
			got := c.run(r, uint64(i*37%pickBenchProxies))
			require.NotNil(t, got, c.name)
			require.Equal(t, c.pool, got.PoolID, c.name)
			require.True(t, got.HasRoom(c.at), "%s: a full proxy picked", c.name)
			require.False(t, got.Cooling(c.at), "%s: a cooling proxy picked", c.name)
		}
	}
}

// BenchmarkPick measures a pick on a 100,000-proxy pool whose first 99% of
// proxies are full (see pickBench).
func BenchmarkPick(b *testing.B) {
	r, cases := pickBench(pickBenchProxies)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if c.run(r, uint64(i%pickBenchProxies)) == nil {
					b.Fatal("nothing picked")
				}
			}
		})
	}
}
