package replica

import (
	"math/rand/v2"
	"testing"

	"github.com/pharox/pharox-nats/record"
)

// BenchmarkLoad is a fresh worker's load of a large pool without NATS:
// decode every record as the watch does and install it.
func BenchmarkLoad(b *testing.B) {
	pool, datas := benchProxies("load", 100000)
	benchLoad(b, pool, datas)
}

// BenchmarkLoadShuffled is the load of a pool whose proxies were written in
// no particular order (as after some traffic: the watch delivers each
// proxy's last version in the order of those writes, not in added order),
// so the indexes are built from scattered inserts.
func BenchmarkLoadShuffled(b *testing.B) {
	pool, datas := benchProxies("load", 100000)
	rand.Shuffle(len(datas), func(i, j int) { datas[i], datas[j] = datas[j], datas[i] })
	benchLoad(b, pool, datas)
}

func benchLoad(b *testing.B, pool *record.Pool, datas [][]byte) {
	b.ResetTimer()
	for range b.N {
		r := New()
		r.Reserve(len(datas)) // as the watch does with the server's count
		installAll(b, r, pool, datas, record.NewCodec(nil).Decode, 1, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(datas)), "ns/proxy")
}
