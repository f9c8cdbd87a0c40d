package replica

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// BenchmarkLoad is a fresh worker's load of a large pool without NATS:
// decode every record as the watch does and install it.
func BenchmarkLoad(b *testing.B) {
	const n = 100000
	pool := &record.Pool{ID: uuid.NewString(), Name: "load"}
	datas := make([][]byte, n)
	for i := range datas {
		country := fmt.Sprintf("C%02d", i%50)
		lat, lon, limit := float64(i%180)-89.5, float64((i/180)%360)-179.5, 1
		in := model.ProxyInput{Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8000 + i%1000,
			Country: &country, Latitude: &lat, Longitude: &lon, MaxConcurrency: &limit}
		datas[i] = record.Encode(record.NewProxy(pool, uint64(i+1), in))
	}
	b.ResetTimer()
	for range b.N {
		r := New()
		r.InstallPool(pool.Name, pool, 1)
		for i, d := range datas {
			rec, err := record.DecodeProxy(d)
			if err != nil {
				b.Fatal(err)
			}
			r.InstallProxy(rec.ID, rec, uint64(i+1))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/proxy")
}
