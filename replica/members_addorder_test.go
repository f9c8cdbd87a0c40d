package replica

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// TestMembersInAddedOrder installs, reinstalls, moves between pools and
// deletes proxies at random, and checks after every step that each pool's
// members are the proxies it holds, in added order, and that MembersOf
// and Members from a position agree with that.
func TestMembersInAddedOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 17))
	pools := []string{"a", "b"}
	r := withPools(New(), pools...)
	type state struct {
		pool string
		seq  uint64
	}
	live := map[string]state{}
	used := map[state]bool{} // added orders are unique within a pool
	place := func(pool string) state {
		for {
			s := state{pool, uint64(rng.IntN(1000) + 1)}
			if !used[s] {
				used[s] = true
				return s
			}
		}
	}
	rev := uint64(0)
	for step := 0; step < 3000; step++ {
		rev++
		id := fmt.Sprintf("p%d", rng.IntN(200))
		switch cur, ok := live[id]; {
		case ok && rng.IntN(5) == 0:
			r.InstallProxy(id, nil, rev)
			delete(live, id)
		case ok && rng.IntN(4) == 0:
			// Moved to the other pool, at a new place in its order.
			next := place(pools[1-slices.Index(pools, cur.pool)])
			r.InstallProxy(id, memberRecord(id, next.pool, next.seq), rev)
			live[id] = next
		case ok:
			r.InstallProxy(id, memberRecord(id, cur.pool, cur.seq), rev) // a new version
		default:
			s := place(pools[rng.IntN(2)])
			r.InstallProxy(id, memberRecord(id, s.pool, s.seq), rev)
			live[id] = s
		}
		for _, pool := range pools {
			want := wantMembers(live, pool, func(s state) (string, uint64) { return s.pool, s.seq })
			var got []string
			r.Members(pool, 0, func(rec *record.Proxy) bool { got = append(got, rec.ID); return true })
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: pool %s members %v, want %v", step, pool, got, want)
			}
			if of := r.MembersOf(pool); !slices.Equal(of, want) {
				t.Fatalf("step %d: MembersOf %s = %v, want %v", step, pool, of, want)
			}
			if len(want) > 1 {
				mid := live[want[len(want)/2]].seq
				var after []string
				r.Members(pool, mid, func(rec *record.Proxy) bool { after = append(after, rec.ID); return true })
				for _, id := range after {
					if live[id].seq <= mid {
						t.Fatalf("step %d: Members after %d lists %s at %d", step, mid, id, live[id].seq)
					}
				}
			}
		}
	}
}

// wantMembers lists the ids live in pool, in added order.
func wantMembers[S any](live map[string]S, pool string, of func(S) (string, uint64)) []string {
	type m struct {
		id  string
		seq uint64
	}
	var ms []m
	for id, s := range live {
		if p, seq := of(s); p == pool {
			ms = append(ms, m{id, seq})
		}
	}
	slices.SortFunc(ms, func(a, b m) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]string, len(ms))
	for i, x := range ms {
		out[i] = x.id
	}
	return out
}

func memberRecord(id, pool string, seq uint64) *record.Proxy {
	one := 1
	return &record.Proxy{ID: id, PoolID: pool, PoolName: pool, Seq: seq, Status: model.ProxyActive,
		Protocol: model.ProtocolHTTP, MaxConcurrency: &one}
}

// BenchmarkInstallVersion is the replica's share of an acquire and release
// on a pool of a million proxies: two new versions of a random proxy (a
// holder added, then removed), as the worker installs its own writes and
// its watch delivers them.
func BenchmarkInstallVersion(b *testing.B) {
	const n = 1 << 20
	r := withPools(New(), "p")
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("p%d", i)
		r.InstallProxy(id, memberRecord(id, "p", uint64(i)), uint64(i))
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	rev := uint64(n)
	b.ResetTimer()
	for range b.N {
		seq := uint64(rng.IntN(n) + 1)
		id := fmt.Sprintf("p%d", seq)
		held := memberRecord(id, "p", seq)
		held.Holders = []record.Holder{{LeaseID: "l", ConsumerName: "c", ExpiresAt: t0.Add(time.Hour)}}
		rev++
		r.InstallProxy(id, held, rev)
		rev++
		r.InstallProxy(id, memberRecord(id, "p", seq), rev)
	}
}
