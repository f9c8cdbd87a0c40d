package manager_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// No lost update of consecutive_failures: 64 goroutines on two workers
// (over NATS, so either worker answers any request) lease proxies of a
// 5-proxy pool and release every lease reporting a failure, so that
// releases of one proxy race each other's revision-checked writes.
//
// What is checked: the test watches the proxies bucket, created with a
// history of 64 so the watcher sees every committed revision (and asserts
// it saw no gap in the stream's sequence). In each revision of a proxy,
// consecutive_failures must have grown by exactly the number of holders
// that revision removed (every removal here is a failure release; leases
// are too long to expire), and at the end it must equal the number of
// leases of that proxy the clients released.
func TestConsecutiveFailuresUnderConcurrentReleases(t *testing.T) {
	const (
		goroutines = 64
		rounds     = 6
		proxies    = 5
	)
	srv := natstest.RunServer(t)
	admin := natstest.Connect(t, srv)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: kvstore.ProxiesBucket, Description: "pharox proxies and their active leases",
		History: 64, Storage: jetstream.FileStorage, Replicas: 1,
	}); err != nil {
		t.Fatalf("create proxies bucket: %v", err)
	}
	watch := startFailureWatch(t, ctx, js)
	var workers []*workertest.Worker
	for i := 0; i < 2; i++ {
		// 64 requests on 5 keys: what is checked is the counts, not how
		// fast they come, so a busy machine gets a long deadline.
		workers = append(workers, workertest.Start(t, natstest.Connect(t, srv), workertest.Config{RequestTimeout: 30 * time.Second}))
	}
	m := workers[0].Manager
	if _, err := m.CreatePool(ctx, model.PoolCreateRequest{Name: "fails"}); err != nil {
		t.Fatal(err)
	}
	in := make([]model.ProxyInput, proxies)
	for i := range in {
		in[i] = model.ProxyInput{Host: fmt.Sprintf("10.3.0.%d", i+1), Port: 8080}
	}
	added, err := m.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "fails", Proxies: in})
	if err != nil {
		t.Fatal(err)
	}

	conns := make([]*nats.Conn, 8)
	for i := range conns {
		conns[i] = natstest.Connect(t, srv)
	}
	var mu sync.Mutex
	released := map[string]int{} // proxy id -> failure releases that ended a lease
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := conns[g%len(conns)]
			consumer := fmt.Sprintf("g%d", g)
			sel := model.SelectorRandom
			d := 600
			for r := 0; r < rounds; r++ {
				var acq model.AcquireReply
				if _, err := natsCall(ctx, nc, "pharox.acquire", model.AcquireRequest{PoolName: "fails",
					ConsumerName: &consumer, Selector: &sel, DurationSeconds: &d}, &acq); err != nil {
					errs <- err
					return
				}
				if acq.Lease == nil {
					errs <- fmt.Errorf("no proxy free in an unlimited pool")
					return
				}
				var rel model.LeaseReply
				req := model.ReleaseFailure(acq.Lease.ID, fmt.Sprintf("%s round %d", consumer, r))
				if _, err := natsCall(ctx, nc, "pharox.release", req, &rel); err != nil {
					errs <- err
					return
				}
				if rel.Lease == nil || rel.Lease.Status != model.LeaseReleased {
					errs <- fmt.Errorf("release of %s answered %+v", acq.Lease.ID, rel.Lease)
					return
				}
				mu.Lock()
				released[acq.Lease.ProxyID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	watch.waitCaughtUp(t, ctx, js)

	watch.mu.Lock()
	defer watch.mu.Unlock()
	if len(watch.gaps) > 0 {
		t.Fatalf("the watcher missed stream sequences %v", watch.gaps)
	}
	total, revisions := 0, 0
	for _, p := range added {
		revs := watch.revs[p.ID]
		var prev failureRev
		for i, r := range revs {
			revisions++
			removed := 0
			for _, h := range prev.holders {
				if !slices.Contains(r.holders, h) {
					removed++
				}
			}
			if i > 0 && r.failures-prev.failures != removed {
				t.Errorf("proxy %s revision %d: consecutive_failures %d -> %d while %d holders were released",
					p.ID, r.rev, prev.failures, r.failures, removed)
			}
			prev = r
		}
		if prev.failures != released[p.ID] {
			t.Errorf("proxy %s: consecutive_failures %d at the end, %d failure releases", p.ID, prev.failures, released[p.ID])
		}
		got, err := m.GetProxy(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ConsecutiveFailures != released[p.ID] || got.CurrentLeases != 0 {
			t.Errorf("proxy %s reads %d failures, %d leases; want %d, 0", p.ID, got.ConsecutiveFailures, got.CurrentLeases, released[p.ID])
		}
		total += released[p.ID]
	}
	if total != goroutines*rounds {
		t.Fatalf("%d releases counted, %d made", total, goroutines*rounds)
	}
	var conflicts uint64
	for _, w := range workers {
		conflicts += w.Manager.Counters().Conflicts
	}
	t.Logf("%d failure releases over %d proxies; %d committed revisions checked; %d lost races retried", total, proxies, revisions, conflicts)
}

// failureWatch records every committed revision of every proxy record:
// its holders and consecutive_failures.
type failureWatch struct {
	mu      sync.Mutex
	revs    map[string][]failureRev
	lastSeq uint64
	gaps    []uint64
	changed chan struct{}
}

type failureRev struct {
	rev      uint64
	holders  []string
	failures int
}

func startFailureWatch(t *testing.T, ctx context.Context, js jetstream.JetStream) *failureWatch {
	t.Helper()
	kv, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		t.Fatal(err)
	}
	fw := &failureWatch{revs: map[string][]failureRev{}, changed: make(chan struct{})}
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			rec := new(record.Proxy)
			if e.Operation() == jetstream.KeyValuePut {
				var err error
				if rec, err = record.DecodeProxy(e.Value()); err != nil {
					t.Errorf("undecodable proxy record %s@%d: %v", e.Key(), e.Revision(), err)
					rec = new(record.Proxy)
				}
			}
			r := failureRev{rev: e.Revision(), failures: rec.ConsecutiveFailures}
			for _, h := range rec.Holders {
				r.holders = append(r.holders, h.LeaseID)
			}
			fw.mu.Lock()
			for s := fw.lastSeq + 1; s < e.Revision(); s++ {
				fw.gaps = append(fw.gaps, s)
			}
			fw.lastSeq = max(fw.lastSeq, e.Revision())
			fw.revs[e.Key()] = append(fw.revs[e.Key()], r)
			close(fw.changed)
			fw.changed = make(chan struct{})
			fw.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = w.Stop(); cancel(); <-done })
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("proxy watch not ready")
	}
	return fw
}

// waitCaughtUp waits until the watcher has seen the bucket's last sequence.
func (w *failureWatch) waitCaughtUp(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	info := streamInfo(t, ctx, js, "KV_"+kvstore.ProxiesBucket)
	for {
		w.mu.Lock()
		seen, ch := w.lastSeq, w.changed
		w.mu.Unlock()
		if seen >= info.State.LastSeq {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("proxy watch stuck at sequence %d of %d", seen, info.State.LastSeq)
		}
	}
}

// WithLease reports fn's outcome on release: success for nil, failure with
// the error's text (cut to 1024 code points) as reason, nothing for an
// error marked model.NotProxyFault or a panic.
func TestWithLeaseReportsOutcome(t *testing.T) {
	e := newLeaseEnv(t)
	px := e.pool("wl-outcome", 0, "10.1.9.1")[0]
	var mu sync.Mutex
	var got []model.ReleaseEvent
	e.m.RegisterReleaseCallback(func(ev model.ReleaseEvent) { mu.Lock(); got = append(got, ev); mu.Unlock() })
	ctx := testCtx(t)
	long := strings.Repeat("ü", 1500)
	cases := []struct {
		name     string
		fn       func() error
		outcome  *model.Outcome
		reason   *string
		failures int
	}{
		{"success", func() error { return nil }, ptrTo(model.OutcomeSuccess), nil, 0},
		{"failure", func() error { return errors.New("HTTP 403 from target") }, ptrTo(model.OutcomeFailure), ptrTo("HTTP 403 from target"), 1},
		{"long failure", func() error { return fmt.Errorf("wrapped: %w", errors.New(long)) }, ptrTo(model.OutcomeFailure), ptrTo("wrapped: " + strings.Repeat("ü", 1024-9)), 2},
		{"not the proxy's fault", func() error { return model.NotProxyFault(errors.New("bad input")) }, nil, nil, 2},
	}
	for _, c := range cases {
		want := c.fn()
		err := e.m.WithLease(ctx, req("wl-outcome"), func(model.Lease, model.Proxy) error { return want })
		if err != want {
			t.Fatalf("%s: WithLease returned %v, want fn's %v", c.name, err, want)
		}
		mu.Lock()
		ev := got[len(got)-1]
		mu.Unlock()
		if fmt.Sprint(deref(ev.Outcome)) != fmt.Sprint(deref(c.outcome)) || fmt.Sprint(deref(ev.Reason)) != fmt.Sprint(deref(c.reason)) {
			t.Errorf("%s: released with %v %q, want %v %q", c.name, deref(ev.Outcome), deref(ev.Reason), deref(c.outcome), deref(c.reason))
		}
		p, err := e.m.GetProxy(ctx, px.ID)
		if err != nil {
			t.Fatal(err)
		}
		if p.ConsecutiveFailures != c.failures {
			t.Errorf("%s: consecutive_failures %d, want %d", c.name, p.ConsecutiveFailures, c.failures)
		}
	}
	func() {
		defer func() { _ = recover() }()
		_ = e.m.WithLease(ctx, req("wl-outcome"), func(model.Lease, model.Proxy) error { panic("bug") })
	}()
	mu.Lock()
	ev := got[len(got)-1]
	mu.Unlock()
	if ev.Outcome != nil || len(got) != len(cases)+1 {
		t.Errorf("a panic reports no outcome: %v (%d releases)", deref(ev.Outcome), len(got))
	}
}

func ptrTo[T any](v T) *T { return &v }

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
