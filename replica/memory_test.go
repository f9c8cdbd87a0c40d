package replica

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// The replica of a large pool, indexes included, stays well under the 1 KiB
// per proxy a worker may use (the bench's scenario 7 measures the whole
// process). Proxies as the bench makes them: a country out of 50, a
// coordinate grid, max_concurrency 1, decoded from their records as the
// watch does.
func TestReplicaMemoryPerProxy(t *testing.T) {
	const n = 50000
	pool, datas := benchProxies("mem", n)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := New()
	installAll(t, r, pool, datas, record.NewCodec(nil).Decode, 1, nil)
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes of live heap per proxy (record %d bytes)", per, len(datas[0]))
	if got := r.Stats("mem", time.Time{}).AvailableProxies; got != n {
		t.Fatalf("%d proxies available, want %d", got, n)
	}
	if per > 600 {
		t.Fatalf("%.0f bytes per proxy", per)
	}
	runtime.KeepAlive(r)
}

// Reserve sizes only an empty replica: proxies installed before it stay.
func TestReserve(t *testing.T) {
	pool, datas := benchProxies("reserve", 3)
	r := New()
	r.Reserve(2)
	installAll(t, r, pool, datas, record.DecodeProxy, 1, func(*record.Proxy) { r.Reserve(100) })
	if got := len(r.ProxyIDs()); got != 3 {
		t.Fatalf("%d proxies, want 3", got)
	}
}

// benchProxies is a pool and n encoded proxy records of it as the bench
// makes them: a country out of 50, a coordinate grid, max_concurrency 1.
func benchProxies(name string, n int) (*record.Pool, [][]byte) {
	pool := &record.Pool{ID: uuid.NewString(), Name: name}
	datas := make([][]byte, n)
	for i := range datas {
		country := fmt.Sprintf("C%02d", i%50)
		lat, lon, limit := float64(i%180)-89.5, float64((i/180)%360)-179.5, 1
		in := model.ProxyInput{Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8000 + i%1000,
			Country: &country, Latitude: &lat, Longitude: &lon, MaxConcurrency: &limit}
		datas[i] = record.Encode(record.NewProxy(pool, uint64(i+1), in))
	}
	return pool, datas
}

// installAll installs pool at revision 1, then datas' proxies decoded with
// decode (as the watch does) at revisions from first on, calling after
// (when not nil) with each proxy once it is installed.
func installAll(tb testing.TB, r *Replica, pool *record.Pool, datas [][]byte,
	decode func([]byte) (*record.Proxy, error), first uint64, after func(*record.Proxy)) {
	tb.Helper()
	r.InstallPool(pool.Name, pool, 1)
	for i, d := range datas {
		rec, err := decode(d)
		if err != nil {
			tb.Fatal(err)
		}
		r.InstallProxy(rec.ID, rec, first+uint64(i))
		if after != nil {
			after(rec)
		}
	}
}
