package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/model"
)

// client sends contract requests; it knows nothing of the worker's code.
type client struct {
	nc      *nats.Conn
	prefix  string
	timeout time.Duration
}

func (c client) call(subject string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg, err := c.nc.Request(c.prefix+"."+subject, body, c.timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return fmt.Errorf("%s: %s %s", subject, code, msg.Header.Get("Nats-Service-Error"))
	}
	if reply == nil {
		return nil
	}
	return json.Unmarshal(msg.Data, reply)
}

// seedPool creates a pool of n proxies in batches of 1000, printing progress.
func seedPool(c client, name string, n int, input func(i int) model.ProxyInput) error {
	if err := c.call("admin.pools.create", model.PoolCreateRequest{Name: name}, nil); err != nil {
		return err
	}
	start := time.Now()
	// Large pools are added by a few requests at once; each add reserves
	// its own range of the added order, so the order stays the inputs'
	// batch by batch.
	par := 1
	if n > 100000 {
		par = 2
	}
	var next, done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for g := 0; g < par; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(model.MaxProxiesPerAdd)) - model.MaxProxiesPerAdd
				if i >= n {
					return
				}
				batch := make([]model.ProxyInput, 0, model.MaxProxiesPerAdd)
				for j := i; j < n && j < i+model.MaxProxiesPerAdd; j++ {
					batch = append(batch, input(j))
				}
				// An add that could not land in time answers 503
				// (unavailable: nothing was changed): again.
				var err error
				for try := 0; try < 5; try++ {
					if err = c.call("admin.proxies.add", model.ProxiesAddRequest{PoolName: name, Proxies: batch}, nil); err == nil {
						break
					}
					time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				if d := done.Add(int64(len(batch))); n >= 10000 && (d/model.MaxProxiesPerAdd)%10 == 0 {
					progress("  seeding %s: %d/%d proxies (%.1fs)", name, d, n, time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// pairRun is the outcome of a run of acquire+release pairs.
type pairRun struct {
	Pairs    int64
	Empty    int64
	Errors   int64
	Seconds  float64
	P50, P99 time.Duration
	// AcqP50 and AcqP99 are the acquires' own latencies.
	AcqP50, AcqP99 time.Duration
	OverLease      bool
	CPU            cpuUse
	// Timeline holds completion times of pairs when asked for (history),
	// and CPUSamples the CPU used so far, read every quarter second over
	// the same run (when a meter is given).
	Timeline   []time.Duration
	CPUSamples []cpuSample
}

// cpuSample is the CPU used from a run's start to at.
type cpuSample struct {
	at  time.Duration
	use cpuUse
}

func (r pairRun) perSecond() float64 { return float64(r.Pairs) / r.Seconds }

// pairSpec says what a run does.
type pairSpec struct {
	clients  int
	duration time.Duration
	maxPairs int64 // stop after this many pairs (0: by duration only)
	hold     time.Duration
	limit    int // max_concurrency of the pool's proxies, for the over-lease check (0: none)
	acquire  func(i int) model.AcquireRequest
	// release builds the release of a lease (nil: a plain one).
	release  func(leaseID string) model.ReleaseRequest
	timeline bool
	// meter, with timeline, is sampled through the run (CPUSamples).
	meter  func() cpuUse
	conns  []*nats.Conn
	prefix string
}

// runPairs runs clients that each loop acquire, hold, release. The
// over-lease check is sound without false alarms: a client counts a lease
// from its acquire reply (after the commit) until it sends the release
// (before the release commits), so the count it sees never exceeds the true
// one; any count above the limit is a real over-lease.
func runPairs(ctx context.Context, spec pairSpec) pairRun {
	var pairs, empty, errs atomic.Int64
	var over atomic.Bool
	held := sync.Map{} // proxy id -> *atomic.Int64
	lat := make([][]time.Duration, spec.clients)
	acqLat := make([][]time.Duration, spec.clients)
	var timeline []time.Duration
	var tlMu sync.Mutex
	start := time.Now()
	end := start.Add(spec.duration)
	var samples []cpuSample
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	if spec.timeline && spec.meter != nil {
		go func() {
			defer close(sampled)
			base := spec.meter()
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopSampling:
					samples = append(samples, cpuSample{at: time.Since(start), use: spec.meter().sub(base)})
					return
				case <-t.C:
					samples = append(samples, cpuSample{at: time.Since(start), use: spec.meter().sub(base)})
				}
			}
		}()
	} else {
		close(sampled)
	}
	var wg sync.WaitGroup
	for i := 0; i < spec.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := client{nc: spec.conns[i%len(spec.conns)], prefix: spec.prefix, timeout: 10 * time.Second}
			for ctx.Err() == nil && time.Now().Before(end) {
				if spec.maxPairs > 0 && pairs.Load() >= spec.maxPairs {
					return
				}
				t0 := time.Now()
				var ar model.AcquireReply
				if err := c.call("acquire", spec.acquire(i), &ar); err != nil {
					errs.Add(1)
					continue
				}
				if ar.Lease == nil {
					empty.Add(1)
					continue
				}
				acqLat[i] = append(acqLat[i], time.Since(t0))
				v, _ := held.LoadOrStore(ar.Lease.ProxyID, new(atomic.Int64))
				n := v.(*atomic.Int64).Add(1)
				if spec.limit > 0 && n > int64(spec.limit) {
					over.Store(true)
				}
				if spec.hold > 0 {
					time.Sleep(spec.hold)
				}
				v.(*atomic.Int64).Add(-1)
				rel := model.ReleaseRequest{LeaseID: ar.Lease.ID}
				if spec.release != nil {
					rel = spec.release(ar.Lease.ID)
				}
				if err := c.call("release", rel, nil); err != nil {
					errs.Add(1)
					continue
				}
				d := time.Since(t0)
				lat[i] = append(lat[i], d)
				pairs.Add(1)
				if spec.timeline {
					tlMu.Lock()
					timeline = append(timeline, time.Since(start))
					tlMu.Unlock()
				}
			}
		}(i)
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	var acq []time.Duration
	for _, l := range acqLat {
		acq = append(acq, l...)
	}
	sort.Slice(acq, func(a, b int) bool { return acq[a] < acq[b] })
	sort.Slice(timeline, func(a, b int) bool { return timeline[a] < timeline[b] })
	return pairRun{
		Pairs: pairs.Load(), Empty: empty.Load(), Errors: errs.Load(),
		Seconds: time.Since(start).Seconds(), P50: pct(all, 0.50), P99: pct(all, 0.99),
		AcqP50: pct(acq, 0.50), AcqP99: pct(acq, 0.99),
		OverLease: over.Load(), Timeline: timeline, CPUSamples: samples,
	}
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*q))]
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
