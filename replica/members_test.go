package replica

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pharox/pharox-nats/record"
)

// A pool's members keep their added order whatever order the proxies come
// in: in order, a little out of order (concurrent adds), or shuffled (a
// pool written to in no particular order, as a fresh worker loads it);
// moves and deletes included.
func TestMembersOrder(t *testing.T) {
	for name, swap := range map[string]int{"in order": 0, "near the end": 40, "shuffled": 1 << 20} {
		t.Run(name, func(t *testing.T) {
			pool, datas := benchProxies("members", 3000)
			for i := range datas {
				if j := i + rand.IntN(swap+1); swap > 0 && j < len(datas) {
					datas[i], datas[j] = datas[j], datas[i]
				}
			}
			r := New()
			var recs []*record.Proxy
			installAll(t, r, pool, datas, record.DecodeProxy, 2, func(rec *record.Proxy) { recs = append(recs, rec) })
			// Every third proxy is deleted, every fifth moves to the end.
			rev := uint64(len(datas) + 2)
			for i, rec := range recs {
				rev++
				switch {
				case i%3 == 0:
					r.InstallProxy(rec.ID, nil, rev)
				case i%5 == 0:
					moved := rec.Clone()
					moved.Seq += 1 << 20
					r.InstallProxy(rec.ID, moved, rev)
				}
			}
			var seqs []uint64
			r.Members(pool.Name, 0, func(p *record.Proxy) bool {
				seqs = append(seqs, p.Seq)
				return true
			})
			if !slices.IsSorted(seqs) {
				t.Fatal("members out of added order")
			}
			if want := len(recs) - (len(recs)+2)/3; len(seqs) != want || len(r.MembersOf(pool.ID)) != want {
				t.Fatalf("%d members, want %d", len(seqs), want)
			}
			var after []uint64
			r.Members(pool.Name, seqs[len(seqs)/2], func(p *record.Proxy) bool {
				after = append(after, p.Seq)
				return true
			})
			if !slices.Equal(after, seqs[len(seqs)/2+1:]) {
				t.Fatal("members after a position")
			}
		})
	}
}
