package replica

import (
	"testing"

	"github.com/pharox/pharox-nats/record"
)

// BenchmarkLoad is a fresh worker's load of a large pool without NATS:
// decode every record as the watch does and install it.
func BenchmarkLoad(b *testing.B) {
	pool, datas := benchProxies("load", 100000)
	b.ResetTimer()
	for range b.N {
		r, codec := New(), record.NewCodec(nil)
		r.Reserve(len(datas)) // as the watch does with the server's count
		r.InstallPool(pool.Name, pool, 1)
		for i, d := range datas {
			rec, err := codec.Decode(d)
			if err != nil {
				b.Fatal(err)
			}
			r.InstallProxy(rec.ID, rec, uint64(i+1))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(datas)), "ns/proxy")
}
