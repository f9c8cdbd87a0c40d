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

var (
	testCountries = []string{"AR", "BR", "CL", "US", "DE"}
	testCities    = []string{"a", "b", "c"}
)

func ptr[T any](v T) *T { return &v }

// randomRecord makes a proxy of pool "p" with random attributes, status,
// limit and holders around t0.
func randomRecord(rng *rand.Rand, seq uint64, t0 time.Time) *record.Proxy {
	statuses := []model.ProxyStatus{model.ProxyActive, model.ProxyActive, model.ProxyActive, model.ProxyInactive, model.ProxySlow, model.ProxyBanned}
	r := &record.Proxy{ID: fmt.Sprintf("x%d", seq), PoolID: "p", PoolName: "p", Seq: seq, Status: statuses[rng.IntN(len(statuses))]}
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
// scan of the whole pool, over random pools and random filter trees.
func TestPickMatchesBruteForce(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := uint64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		r := withPools(New(), "p")
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
			eligible := func(rec *record.Proxy) bool {
				return rec.Status == model.ProxyActive && rec.HasRoom(horizon) && f.Matches(rec.Attrs())
			}
			var want []*record.Proxy
			for _, rec := range members {
				if eligible(rec) {
					want = append(want, rec)
				}
			}
			ok := func(rec *record.Proxy) bool { return rec.HasRoom(horizon) }
			desc := fmt.Sprintf("seed %d query %d filters %+v", seed, q, f)

			got := pick(r, "p", model.SelectorFirstAvailable, f, 0, horizon, ok)
			if len(want) == 0 {
				require.Nil(t, got, desc)
				require.Nil(t, pick(r, "p", model.SelectorRandom, f, 0, horizon, ok), desc)
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
			got = pick(r, "p", model.SelectorLeastUsed, f, 0, horizon, ok)
			require.Equal(t, least.ID, got.ID, "least_used "+desc)

			after := want[rng.IntN(len(want))].Seq
			next := want[0]
			for _, w := range want {
				if w.Seq > after {
					next = w
					break
				}
			}
			got = pick(r, "p", model.SelectorRoundRobin, f, after, horizon, ok)
			require.Equal(t, next.ID, got.ID, "round_robin after %d %s", after, desc)

			got = pick(r, "p", model.SelectorRandom, f, 0, horizon, ok)
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

// BenchmarkPick measures a pick on a 100,000-proxy pool whose first 99% of
// proxies are full, the case a scan of the pool would pay for.
func BenchmarkPick(b *testing.B) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := withPools(New(), "p")
	const n = 100000
	for i := 1; i <= n; i++ {
		one := 1
		lat, lon := float64(i%180)-89.5, float64((i/180)%360)-179.5
		rec := &record.Proxy{ID: fmt.Sprintf("x%d", i), PoolID: "p", PoolName: "p", Seq: uint64(i), Status: model.ProxyActive,
			MaxConcurrency: &one, Country: ptr(fmt.Sprintf("C%02d", i%50)), Latitude: &lat, Longitude: &lon}
		if i < n*99/100 {
			rec.Holders = []record.Holder{{LeaseID: "h", ExpiresAt: t0.Add(time.Hour)}}
		}
		r.InstallProxy(rec.ID, rec, uint64(i))
	}
	ok := func(*record.Proxy) bool { return true }
	country := &model.ProxyFilters{Country: ptr("C07")}
	geo := &model.ProxyFilters{Latitude: ptr(10.0), Longitude: ptr(20.0), RadiusKm: ptr(500.0)}
	for _, bc := range []struct {
		name string
		sel  model.Selector
		f    *model.ProxyFilters
	}{
		{"first_available", model.SelectorFirstAvailable, nil},
		{"least_used", model.SelectorLeastUsed, nil},
		{"round_robin", model.SelectorRoundRobin, nil},
		{"random", model.SelectorRandom, nil},
		{"country", model.SelectorFirstAvailable, country},
		{"geo_500km", model.SelectorFirstAvailable, geo},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				pick(r, "p", bc.sel, bc.f, uint64(i%n), t0, ok)
			}
		})
	}
}
