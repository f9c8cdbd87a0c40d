package replica

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// scanExpiredHolders is the sweep's list by brute force: every proxy the
// replica holds, each looked at.
func scanExpiredHolders(r *Replica, horizon time.Time) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var ids []string
	for id, e := range r.proxies {
		if e.rec.LiveHolders(horizon) != len(e.rec.Holders) {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestExpiredHoldersMatchBruteForce drives the replica with random proxy
// versions (holders added, renewed, removed; stale revisions; deletions
// from the watch and by this worker; own writes of proxies it does not
// know), the passing of time and Advance, and checks after every step, at
// several horizons, that WithExpiredHolders lists exactly the proxies a
// scan of every proxy lists, each once.
func TestExpiredHoldersMatchBruteForce(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed*7))
			r := withPools(New(WithGrace(time.Duration(seed%3)*time.Second)), "a", "b")
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			rev := uint64(0)
			pools := []string{"a", "b"}
			for step := 0; step < 500; step++ {
				rev++
				n := rng.IntN(16)
				id := fmt.Sprintf("p%d", n)
				at := rev
				if rng.IntN(10) == 0 && rev > 5 {
					at = rev - uint64(1+rng.IntN(5)) // stale: usually ignored
				}
				switch op := rng.IntN(20); {
				case op < 12:
					pool := pools[rng.IntN(2)]
					rec := &record.Proxy{ID: id, PoolID: pool, PoolName: pool, Seq: uint64(n + 1), Status: model.ProxyActive}
					old, _, ok := r.Proxy(id)
					if ok {
						if rng.IntN(5) > 0 {
							rec.PoolID, rec.PoolName, rec.Seq = old.PoolID, old.PoolName, old.Seq
						}
						if rng.IntN(4) > 0 {
							rec.Holders = append(rec.Holders, old.Holders...)
						}
					}
					for k := rng.IntN(3); k > 0; k-- {
						rec.Holders = append(rec.Holders, record.Holder{LeaseID: fmt.Sprintf("l%d-%d", rev, k),
							ExpiresAt: now.Add(time.Duration(rng.IntN(40)-10) * time.Second), ConsumerName: "c"})
					}
					if len(rec.Holders) > 0 && rng.IntN(3) == 0 {
						rec.Holders = rec.Holders[1:] // a release
					}
					if len(rec.Holders) > 0 && rng.IntN(4) == 0 { // a renew
						rec.Holders[0].ExpiresAt = now.Add(time.Duration(rng.IntN(30)) * time.Second)
					}
					if rng.IntN(4) == 0 {
						r.InstallOwnProxy(id, rec, at)
					} else {
						r.InstallProxy(id, rec, at)
					}
				case op < 14:
					r.InstallProxy(id, nil, at)
				case op < 15:
					r.RemoveProxy(id)
				case op < 17:
					r.Advance(now.Add(-time.Duration(rng.IntN(3)) * time.Second))
				default:
					now = now.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
				}
				for _, d := range []time.Duration{-time.Hour, -5 * time.Second, -time.Second, 0, time.Second, time.Duration(rng.IntN(20000)) * time.Millisecond, time.Hour} {
					horizon := now.Add(d)
					got, want := r.WithExpiredHolders(horizon), scanExpiredHolders(r, horizon)
					slices.Sort(got)
					slices.Sort(want)
					require.Equal(t, want, got, "step %d horizon %v", step, d)
				}
			}
		})
	}
}

// BenchmarkExpiredHolders is one expiry sweep's list at 1,000,000 proxies
// of which 1% have a holder (half of them expired): "index" is
// WithExpiredHolders, "scan" the look at every proxy it replaces.
func BenchmarkExpiredHolders(b *testing.B) {
	const n, heldEvery = 1_000_000, 100
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := withPools(New(), "a")
	for i := range n {
		rec := &record.Proxy{ID: fmt.Sprintf("p%07d", i), PoolID: "a", PoolName: "a", Seq: uint64(i + 1), Status: model.ProxyActive}
		if i%heldEvery == 0 {
			exp := now.Add(time.Minute)
			if i%(2*heldEvery) == 0 {
				exp = now.Add(-time.Minute)
			}
			rec.Holders = []record.Holder{{LeaseID: fmt.Sprintf("l%07d", i), ExpiresAt: exp, ConsumerName: "c"}}
		}
		r.InstallProxy(rec.ID, rec, uint64(i+1))
	}
	want := n / heldEvery / 2
	for _, c := range []struct {
		name string
		list func(*Replica, time.Time) []string
	}{{"index", (*Replica).WithExpiredHolders}, {"scan", scanExpiredHolders}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				if got := len(c.list(r, now)); got != want {
					b.Fatalf("%d listed, want %d", got, want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/sweep")
		})
	}
}
