package replica

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pharox/pharox-nats/record"
)

// insertMember keeps the added order whatever order proxies come in: in
// order, a little out of order (concurrent adds), or shuffled.
func TestInsertMemberOrder(t *testing.T) {
	for name, swap := range map[string]int{"in order": 0, "near the end": 40, "shuffled": 1 << 20} {
		t.Run(name, func(t *testing.T) {
			seqs := make([]uint64, 5000)
			for i := range seqs {
				seqs[i] = uint64(i + 1)
			}
			for i := range seqs {
				if j := i + rand.IntN(swap+1); swap > 0 && j < len(seqs) {
					seqs[i], seqs[j] = seqs[j], seqs[i]
				}
			}
			var list []*proxyEntry
			for _, s := range seqs {
				list = insertMember(list, &proxyEntry{rec: &record.Proxy{Seq: s}})
			}
			if !slices.IsSortedFunc(list, func(a, b *proxyEntry) int { return int(a.rec.Seq) - int(b.rec.Seq) }) || len(list) != len(seqs) {
				t.Fatal("members out of added order")
			}
		})
	}
}
