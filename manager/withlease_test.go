package manager_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
)

// leaseEnv is one worker on its own server, with helpers for the tests of
// WithLease, callbacks, defaults and validation.
type leaseEnv struct {
	t  *testing.T
	w  *workertest.Worker
	m  *manager.Manager
	js jetstream.JetStream
}

func newLeaseEnv(t *testing.T) *leaseEnv {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	w := workertest.Start(t, nc, workertest.Config{})
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	return &leaseEnv{t: t, w: w, m: w.Manager, js: js}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pool creates a pool with one proxy per host, each limited to maxConc
// (0: unlimited), and returns them in added order.
func (e *leaseEnv) pool(name string, maxConc int, hosts ...string) []model.Proxy {
	e.t.Helper()
	ctx := testCtx(e.t)
	if _, err := e.m.CreatePool(ctx, model.PoolCreateRequest{Name: name}); err != nil {
		e.t.Fatalf("create pool %s: %v", name, err)
	}
	if len(hosts) == 0 {
		return nil
	}
	in := make([]model.ProxyInput, len(hosts))
	for i, h := range hosts {
		in[i] = model.ProxyInput{Host: h, Port: 3128}
		if maxConc > 0 {
			in[i].MaxConcurrency = &maxConc
		}
	}
	added, err := e.m.AddProxies(ctx, model.ProxiesAddRequest{PoolName: name, Proxies: in})
	if err != nil {
		e.t.Fatalf("add proxies to %s: %v", name, err)
	}
	return added
}

func (e *leaseEnv) currentLeases(proxyID string) int {
	e.t.Helper()
	p, err := e.m.GetProxy(testCtx(e.t), proxyID)
	if err != nil {
		e.t.Fatalf("get proxy %s: %v", proxyID, err)
	}
	return p.CurrentLeases
}

func (e *leaseEnv) leaseStatus(id string) model.LeaseStatus {
	e.t.Helper()
	l, err := e.m.GetLease(testCtx(e.t), id)
	if err != nil {
		e.t.Fatalf("get lease %s: %v", id, err)
	}
	return l.Status
}

// assertReleased checks that the lease ended as released and holds no slot.
func (e *leaseEnv) assertReleased(l model.Lease) {
	e.t.Helper()
	if s := e.leaseStatus(l.ID); s != model.LeaseReleased {
		e.t.Errorf("lease %s is %s after WithLease, want released", l.ID, s)
	}
	if n := e.currentLeases(l.ProxyID); n != 0 {
		e.t.Errorf("proxy %s has current_leases %d after WithLease, want 0", l.ProxyID, n)
	}
}

// lastSeqs returns the last stream sequence of every bucket: equal before
// and after means nothing was written.
func (e *leaseEnv) lastSeqs() map[string]uint64 {
	e.t.Helper()
	ctx := testCtx(e.t)
	out := map[string]uint64{}
	for name := range e.js.StreamNames(ctx).Name() {
		if !strings.HasPrefix(name, "KV_") {
			continue
		}
		out[name] = streamInfo(e.t, ctx, e.js, name).State.LastSeq
	}
	if len(out) < 4 {
		e.t.Fatalf("found only the buckets %v", out)
	}
	return out
}

func req(pool string) model.AcquireRequest { return model.AcquireRequest{PoolName: pool} }

// withLease runs WithLease on pool with fn and returns the lease fn ran
// with (zero when fn was not called) and WithLease's error.
func (e *leaseEnv) withLease(ctx context.Context, pool string, fn func() error) (model.Lease, error) {
	var held model.Lease
	err := e.m.WithLease(ctx, req(pool), func(l model.Lease, _ model.Proxy) error {
		held = l
		return fn()
	})
	return held, err
}

func TestWithLeaseReleasesOnSuccess(t *testing.T) {
	e := newLeaseEnv(t)
	px := e.pool("wl-ok", 1, "10.1.0.1")
	var held model.Lease
	calls := 0
	err := e.m.WithLease(testCtx(t), req("wl-ok"), func(l model.Lease, p model.Proxy) error {
		calls++
		held = l
		if l.Status != model.LeaseActive || l.ProxyID != px[0].ID || p.ID != px[0].ID {
			t.Errorf("fn got lease %+v on proxy %s; want an active lease on %s", l, p.ID, px[0].ID)
		}
		if p.CurrentLeases != 1 {
			t.Errorf("fn got proxy with current_leases %d, want 1", p.CurrentLeases)
		}
		if n := e.currentLeases(px[0].ID); n != 1 {
			t.Errorf("during fn the proxy reads current_leases %d, want 1", n)
		}
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("WithLease = %v after %d calls of fn; want nil after 1", err, calls)
	}
	e.assertReleased(held)
}

func TestWithLeaseReleasesWhenFnFails(t *testing.T) {
	e := newLeaseEnv(t)
	e.pool("wl-err", 1, "10.1.0.1")
	boom := errors.New("boom")
	held, err := e.withLease(testCtx(t), "wl-err", func() error { return fmt.Errorf("scraping failed: %w", boom) })
	if !errors.Is(err, boom) {
		t.Fatalf("WithLease = %v, want fn's error", err)
	}
	e.assertReleased(held)
}

func TestWithLeaseReleasesWhenFnPanics(t *testing.T) {
	e := newLeaseEnv(t)
	e.pool("wl-panic", 1, "10.1.0.1")
	type panicValue struct{ s string }
	var held model.Lease
	returned := false
	recovered := func() (r any) {
		defer func() { r = recover() }()
		_ = e.m.WithLease(testCtx(t), req("wl-panic"), func(l model.Lease, _ model.Proxy) error {
			held = l
			panic(panicValue{"kaboom"})
		})
		returned = true
		return nil
	}()
	if returned || recovered != (panicValue{"kaboom"}) {
		t.Fatalf("WithLease returned=%v, recovered %#v; want fn's panic to go on", returned, recovered)
	}
	if held.ID == "" {
		t.Fatal("fn was not called")
	}
	e.assertReleased(held)
	// The slot is usable again.
	l, _, err := e.m.AcquireProxy(testCtx(t), req("wl-panic"))
	if err != nil || l == nil {
		t.Fatalf("acquire after the panic: lease %v, err %v; want the freed proxy", l, err)
	}
}

func TestWithLeaseReleasesWhenCallerContextIsCancelled(t *testing.T) {
	e := newLeaseEnv(t)
	e.pool("wl-ctx", 1, "10.1.0.1")

	t.Run("fn returns ctx.Err", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		held, err := e.withLease(ctx, "wl-ctx", func() error {
			cancel()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WithLease = %v, want context.Canceled from fn", err)
		}
		e.assertReleased(held)
	})
	t.Run("fn ignores the cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		held, err := e.withLease(ctx, "wl-ctx", func() error {
			cancel()
			return nil
		})
		if err != nil {
			t.Fatalf("WithLease = %v; the release must not fail for the caller's cancelled context", err)
		}
		e.assertReleased(held)
	})
	t.Run("deadline passes during fn", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
		defer cancel()
		held, err := e.withLease(ctx, "wl-ctx", func() error {
			<-ctx.Done()
			return nil
		})
		if err != nil {
			t.Fatalf("WithLease = %v after the deadline passed in fn; want nil", err)
		}
		e.assertReleased(held)
	})
}

func TestWithLeaseNoProxyFree(t *testing.T) {
	e := newLeaseEnv(t)
	px := e.pool("wl-full", 1, "10.1.0.1")
	e.pool("wl-empty", 1)
	ctx := testCtx(t)
	holder, _, err := e.m.AcquireProxy(ctx, req("wl-full"))
	if err != nil || holder == nil {
		t.Fatalf("acquire: %v, %v", holder, err)
	}
	for _, pool := range []string{"wl-full", "wl-empty"} {
		called := false
		err := e.m.WithLease(ctx, req(pool), func(model.Lease, model.Proxy) error {
			called = true
			return nil
		})
		if !errors.Is(err, model.ErrNoProxyAvailable) {
			t.Errorf("%s: WithLease = %v, want ErrNoProxyAvailable", pool, err)
		}
		if called {
			t.Errorf("%s: fn was called without a lease", pool)
		}
	}
	// The lease held meanwhile was not touched.
	if s := e.leaseStatus(holder.ID); s != model.LeaseActive {
		t.Errorf("the lease held meanwhile is %s, want active", s)
	}
	if n := e.currentLeases(px[0].ID); n != 1 {
		t.Errorf("current_leases %d, want 1", n)
	}

	// Errors that are not "none free" come through as they are, fn uncalled.
	for name, tc := range map[string]struct {
		r    model.AcquireRequest
		want error
	}{
		"unknown pool": {req("wl-nosuch"), model.ErrPoolNotFound},
		"bad request":  {model.AcquireRequest{PoolName: "wl full"}, model.ErrBadRequest},
	} {
		err := e.m.WithLease(ctx, tc.r, func(model.Lease, model.Proxy) error {
			t.Errorf("%s: fn called", name)
			return nil
		})
		if !errors.Is(err, tc.want) || errors.Is(err, model.ErrNoProxyAvailable) {
			t.Errorf("%s: WithLease = %v, want %v", name, err, tc.want)
		}
	}
}

// callbackLog records callback payloads.
type callbackLog struct {
	mu       sync.Mutex
	acquires []model.AcquireEvent
	releases []model.ReleaseEvent
}

// logCallbacks registers a callbackLog for m's acquire and release
// callbacks.
func logCallbacks(m *manager.Manager) *callbackLog {
	c := &callbackLog{}
	m.RegisterAcquireCallback(logInto(c, &c.acquires))
	m.RegisterReleaseCallback(logInto(c, &c.releases))
	return c
}

// logInto is a callback that appends its payload to one of c's lists.
func logInto[E any](c *callbackLog, list *[]E) func(E) {
	return func(ev E) {
		c.mu.Lock()
		defer c.mu.Unlock()
		*list = append(*list, ev)
	}
}

func (c *callbackLog) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acquires), len(c.releases)
}

func (c *callbackLog) lastAcquire(t *testing.T) model.AcquireEvent {
	t.Helper()
	return lastLogged(t, c, &c.acquires, "acquire")
}

func (c *callbackLog) lastRelease(t *testing.T) model.ReleaseEvent {
	t.Helper()
	return lastLogged(t, c, &c.releases, "release")
}

// lastLogged is the newest payload of one of c's lists; the test fails when
// no callback of that kind (what) ran.
func lastLogged[E any](t testing.TB, c *callbackLog, list *[]E, what string) E {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(*list) == 0 {
		t.Fatalf("no %s callback", what)
	}
	return (*list)[len(*list)-1]
}

func TestCallbacksCarryTheirPayloads(t *testing.T) {
	e := newLeaseEnv(t)
	px := e.pool("cb", 1, "10.2.0.1")
	cb := logCallbacks(e.m)
	ctx := testCtx(t)
	consumer := "cb-user"

	// acquired
	lease, _, err := e.m.AcquireProxy(ctx, model.AcquireRequest{PoolName: "cb", ConsumerName: &consumer})
	if err != nil || lease == nil {
		t.Fatalf("acquire: %v, %v", lease, err)
	}
	ev := cb.lastAcquire(t)
	if ev.Lease == nil || !sameLease(*ev.Lease, *lease) {
		t.Errorf("acquire callback lease %+v, want %+v", ev.Lease, *lease)
	}
	if ev.PoolName != "cb" || ev.ConsumerName != consumer || ev.Selector != model.SelectorFirstAvailable || ev.Filters != nil {
		t.Errorf("acquire callback pool %q consumer %q selector %q filters %v; want cb, %s, first_available, nil",
			ev.PoolName, ev.ConsumerName, ev.Selector, ev.Filters, consumer)
	}
	checkTiming(t, ev)
	if ev.PoolStats == nil || ev.PoolStats.PoolName != "cb" || ev.PoolStats.TotalProxies != 1 ||
		ev.PoolStats.TotalLeases != 1 || ev.PoolStats.LeasedProxies != 1 || ev.PoolStats.AvailableProxies != 0 {
		t.Errorf("acquire callback pool_stats %+v; want the pool right after the lease (1 lease, 0 available)", ev.PoolStats)
	}

	// acquire_failed: same payload, lease nil
	country := "DE"
	sel := model.SelectorLeastUsed
	none, _, err := e.m.AcquireProxy(ctx, model.AcquireRequest{PoolName: "cb", ConsumerName: &consumer,
		Selector: &sel, Filters: &model.ProxyFilters{AnyOf: []model.ProxyFilters{{Country: &country}, {}}}})
	if err != nil || none != nil {
		t.Fatalf("acquire on a full pool: %v, %v; want nil, nil", none, err)
	}
	ev = cb.lastAcquire(t)
	if ev.Lease != nil {
		t.Errorf("acquire_failed callback has lease %+v, want nil", ev.Lease)
	}
	if ev.PoolName != "cb" || ev.ConsumerName != consumer || ev.Selector != model.SelectorLeastUsed ||
		ev.Filters == nil || len(ev.Filters.AnyOf) != 2 || *ev.Filters.AnyOf[0].Country != "DE" {
		t.Errorf("acquire_failed callback %+v; want pool cb, consumer %s, least_used and the request's filters", ev, consumer)
	}
	checkTiming(t, ev)
	if ev.PoolStats == nil || ev.PoolStats.TotalLeases != 1 || ev.PoolStats.AvailableProxies != 0 {
		t.Errorf("acquire_failed pool_stats %+v, want 1 lease and nothing available", ev.PoolStats)
	}

	// released
	released, err := e.m.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: &consumer})
	if err != nil {
		t.Fatal(err)
	}
	rev := cb.lastRelease(t)
	if rev.Lease == nil || rev.Lease.ID != lease.ID || rev.Lease.Status != model.LeaseReleased || rev.Lease.ReleasedAt == nil {
		t.Fatalf("release callback lease %+v, want lease %s released", rev.Lease, lease.ID)
	}
	if !sameLease(*rev.Lease, released) {
		t.Errorf("release callback lease %+v differs from the reply %+v", *rev.Lease, released)
	}
	if rev.PoolName != "cb" || !rev.ReleasedAt.Equal(*rev.Lease.ReleasedAt) {
		t.Errorf("release callback pool %q released_at %v; want cb and the lease's %v", rev.PoolName, rev.ReleasedAt, *rev.Lease.ReleasedAt)
	}
	wantMs := float64(rev.ReleasedAt.Sub(lease.AcquiredAt)) / float64(time.Millisecond)
	if math.Abs(rev.LeaseDurationMs-wantMs) > 1e-6 || rev.LeaseDurationMs < 0 {
		t.Errorf("release callback lease_duration_ms %v, want %v", rev.LeaseDurationMs, wantMs)
	}
	if rev.PoolStats == nil || rev.PoolStats.TotalLeases != 0 || rev.PoolStats.AvailableProxies != 1 || rev.PoolStats.LeasedProxies != 0 {
		t.Errorf("release callback pool_stats %+v, want the pool free again", rev.PoolStats)
	}

	// A second release changes nothing and fires nothing.
	acq, rel := cb.counts()
	again, err := e.m.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	if err != nil || again.Status != model.LeaseReleased {
		t.Fatalf("second release: %+v, %v", again, err)
	}
	if a2, r2 := cb.counts(); a2 != acq || r2 != rel {
		t.Errorf("second release fired callbacks: acquire %d->%d, release %d->%d", acq, a2, rel, r2)
	}
	if acq != 2 || rel != 1 {
		t.Errorf("callbacks fired %d acquire and %d release, want 2 and 1", acq, rel)
	}
	if n := e.currentLeases(px[0].ID); n != 0 {
		t.Errorf("current_leases %d after a double release, want 0", n)
	}
}

func checkTiming(t *testing.T, ev model.AcquireEvent) {
	t.Helper()
	if ev.StartedAt.IsZero() || ev.CompletedAt.Before(ev.StartedAt) {
		t.Errorf("acquire callback started_at %v completed_at %v", ev.StartedAt, ev.CompletedAt)
	}
	want := float64(ev.CompletedAt.Sub(ev.StartedAt)) / float64(time.Millisecond)
	if math.Abs(ev.DurationMs-want) > 1e-6 {
		t.Errorf("acquire callback duration_ms %v, want %v", ev.DurationMs, want)
	}
	if ev.Lease != nil && (ev.Lease.AcquiredAt.Before(ev.StartedAt) || ev.Lease.AcquiredAt.After(ev.CompletedAt)) {
		t.Errorf("lease acquired_at %v outside the acquire's [%v, %v]", ev.Lease.AcquiredAt, ev.StartedAt, ev.CompletedAt)
	}
}

func TestAcquireProxyDefaults(t *testing.T) {
	e := newLeaseEnv(t)
	// Hosts deliberately out of lexical order; ids are random UUIDs, so
	// only the added order explains the order of a first_available walk.
	hosts := []string{"10.3.0.9", "10.3.0.2", "10.3.0.7", "10.3.0.1", "10.3.0.8", "10.3.0.3"}
	px := e.pool("defaults", 1, hosts[:4]...)
	more, err := e.m.AddProxies(testCtx(t), model.ProxiesAddRequest{PoolName: "defaults", Proxies: []model.ProxyInput{
		{Host: hosts[4], Port: 3128, MaxConcurrency: ptr(1)}, {Host: hosts[5], Port: 3128, MaxConcurrency: ptr(1)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	px = append(px, more...)
	ctx := testCtx(t)
	def, err := e.m.EnsureConsumer(ctx, model.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}

	var leases []*model.Lease
	for i := range px {
		l, p, err := e.m.AcquireProxy(ctx, req("defaults"))
		if err != nil || l == nil {
			t.Fatalf("acquire %d: %v, %v", i, l, err)
		}
		if l.ProxyID != px[i].ID || p.Host != hosts[i] {
			t.Errorf("acquire %d got proxy %s (%s); first_available wants %s (%s), the %d-th added",
				i, p.Host, l.ProxyID, hosts[i], px[i].ID, i+1)
		}
		if l.ConsumerName != model.DefaultConsumer || l.ConsumerID != def.ID {
			t.Errorf("lease consumer %q/%s, want %q/%s", l.ConsumerName, l.ConsumerID, model.DefaultConsumer, def.ID)
		}
		if d := l.ExpiresAt.Sub(l.AcquiredAt); d != 300*time.Second {
			t.Errorf("lease lasts %v, want the default 300s", d)
		}
		if l.Status != model.LeaseActive || l.ReleasedAt != nil || l.PoolName != "defaults" || l.FencingToken == 0 {
			t.Errorf("lease %+v: want active, unreleased, in pool defaults, with a fencing token", *l)
		}
		leases = append(leases, l)
	}
	if l, _, err := e.m.AcquireProxy(ctx, req("defaults")); err != nil || l != nil {
		t.Fatalf("acquire on a full pool: %v, %v; want nil, nil", l, err)
	}
	// Free the 4th and the 2nd: the first in added order comes back first.
	for _, i := range []int{3, 1} {
		if _, err := e.m.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: leases[i].ID}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{1, 3} {
		l, _, err := e.m.AcquireProxy(ctx, req("defaults"))
		if err != nil || l == nil || l.ProxyID != px[want].ID {
			t.Fatalf("re-acquire: %v, %v; want proxy %d (%s)", l, err, want+1, px[want].ID)
		}
		if l.FencingToken <= leases[want].FencingToken {
			t.Errorf("fencing token %d on proxy %s not above the previous lease's %d", l.FencingToken, l.ProxyID, leases[want].FencingToken)
		}
	}

	// The bounds of duration_seconds are inclusive.
	e.pool("bounds", 0, "10.3.1.1")
	for _, secs := range []int{1, model.MaxDurationSeconds} {
		l, _, err := e.m.AcquireProxy(ctx, model.AcquireRequest{PoolName: "bounds", DurationSeconds: ptr(secs)})
		if err != nil || l == nil {
			t.Fatalf("duration %d: %v, %v", secs, l, err)
		}
		if d := l.ExpiresAt.Sub(l.AcquiredAt); d != time.Duration(secs)*time.Second {
			t.Errorf("duration_seconds %d gave a lease of %v", secs, d)
		}
	}
}

func TestAcquireProxyBadInputsChangeNothing(t *testing.T) {
	e := newLeaseEnv(t)
	px := e.pool("bad-in", 1, "10.4.0.1")
	cb := logCallbacks(e.m)
	ctx := testCtx(t)
	ghost := "ghost-consumer" // valid name, must not get registered by a refused request
	before := e.lastSeqs()

	f := func(v float64) *float64 { return &v }
	s := func(v string) *string { return &v }
	sel := func(v string) *model.Selector { x := model.Selector(v); return &x }
	base := func(mod func(r *model.AcquireRequest)) model.AcquireRequest {
		r := model.AcquireRequest{PoolName: "bad-in", ConsumerName: &ghost}
		mod(&r)
		return r
	}
	deep := &model.ProxyFilters{}
	for cur, i := deep, 0; i < model.MaxFilterDepth; i++ {
		cur.AllOf = []model.ProxyFilters{{}}
		cur = &cur.AllOf[0]
	}
	cases := map[string]model.AcquireRequest{
		"duration 0":            base(func(r *model.AcquireRequest) { r.DurationSeconds = ptr(0) }),
		"duration -1":           base(func(r *model.AcquireRequest) { r.DurationSeconds = ptr(-1) }),
		"duration 86401":        base(func(r *model.AcquireRequest) { r.DurationSeconds = ptr(86401) }),
		"pool name empty":       base(func(r *model.AcquireRequest) { r.PoolName = "" }),
		"pool name with space":  base(func(r *model.AcquireRequest) { r.PoolName = "bad in" }),
		"pool name with dot":    base(func(r *model.AcquireRequest) { r.PoolName = "bad.in" }),
		"pool name 129 chars":   base(func(r *model.AcquireRequest) { r.PoolName = strings.Repeat("p", 129) }),
		"consumer name bad":     base(func(r *model.AcquireRequest) { r.ConsumerName = s("who?") }),
		"consumer name empty":   base(func(r *model.AcquireRequest) { r.ConsumerName = s("") }),
		"selector unknown":      base(func(r *model.AcquireRequest) { r.Selector = sel("fastest") }),
		"selector empty":        base(func(r *model.AcquireRequest) { r.Selector = sel("") }),
		"selector wrong case":   base(func(r *model.AcquireRequest) { r.Selector = sel("First_Available") }),
		"wait_seconds 61":       base(func(r *model.AcquireRequest) { r.WaitSeconds = f(61) }),
		"wait_seconds 60.5":     base(func(r *model.AcquireRequest) { r.WaitSeconds = f(60.5) }),
		"wait_seconds -1":       base(func(r *model.AcquireRequest) { r.WaitSeconds = f(-1) }),
		"wait_seconds NaN":      base(func(r *model.AcquireRequest) { r.WaitSeconds = f(math.NaN()) }),
		"request_id empty":      base(func(r *model.AcquireRequest) { r.RequestID = s("") }),
		"request_id 129 chars":  base(func(r *model.AcquireRequest) { r.RequestID = s(strings.Repeat("r", 129)) }),
		"latitude alone":        base(func(r *model.AcquireRequest) { r.Filters = &model.ProxyFilters{Latitude: f(1)} }),
		"longitude alone":       base(func(r *model.AcquireRequest) { r.Filters = &model.ProxyFilters{Longitude: f(1)} }),
		"latitude 91":           base(func(r *model.AcquireRequest) { r.Filters = &model.ProxyFilters{Latitude: f(91), Longitude: f(0)} }),
		"longitude -181":        base(func(r *model.AcquireRequest) { r.Filters = &model.ProxyFilters{Latitude: f(0), Longitude: f(-181)} }),
		"radius without coords": base(func(r *model.AcquireRequest) { r.Filters = &model.ProxyFilters{RadiusKm: f(10)} }),
		"radius 0": base(func(r *model.AcquireRequest) {
			r.Filters = &model.ProxyFilters{Latitude: f(0), Longitude: f(0), RadiusKm: f(0)}
		}),
		"radius negative": base(func(r *model.AcquireRequest) {
			r.Filters = &model.ProxyFilters{Latitude: f(0), Longitude: f(0), RadiusKm: f(-5)}
		}),
		"bad filter in any_of": base(func(r *model.AcquireRequest) {
			r.Filters = &model.ProxyFilters{AnyOf: []model.ProxyFilters{{}, {Latitude: f(100), Longitude: f(0)}}}
		}),
		"bad filter in none_of": base(func(r *model.AcquireRequest) {
			r.Filters = &model.ProxyFilters{NoneOf: []model.ProxyFilters{{RadiusKm: f(1)}}}
		}),
		"filters too deep": base(func(r *model.AcquireRequest) { r.Filters = deep }),
	}
	for name, r := range cases {
		lease, proxy, err := e.m.AcquireProxy(ctx, r)
		if !errors.Is(err, model.ErrBadRequest) {
			t.Errorf("%s: err %v, want ErrBadRequest", name, err)
		}
		if lease != nil || proxy != nil {
			t.Errorf("%s: got a lease %+v", name, lease)
		}
		werr := e.m.WithLease(ctx, r, func(model.Lease, model.Proxy) error {
			t.Errorf("%s: WithLease called fn", name)
			return nil
		})
		if !errors.Is(werr, model.ErrBadRequest) {
			t.Errorf("%s: WithLease err %v, want ErrBadRequest", name, werr)
		}
	}

	if a, r := cb.counts(); a != 0 || r != 0 {
		t.Errorf("refused requests fired %d acquire and %d release callbacks", a, r)
	}
	after := e.lastSeqs()
	for b, seq := range before {
		if after[b] != seq {
			t.Errorf("bucket %s moved from sequence %d to %d: a refused request wrote", b, seq, after[b])
		}
	}
	if n := e.currentLeases(px[0].ID); n != 0 {
		t.Errorf("current_leases %d after refused requests", n)
	}
	consumers, err := e.m.ListConsumers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range consumers {
		if c.Name == ghost {
			t.Errorf("consumer %q registered by a refused request", ghost)
		}
	}
	// And the same request with the bad field fixed works.
	if l, _, err := e.m.AcquireProxy(ctx, base(func(*model.AcquireRequest) {})); err != nil || l == nil {
		t.Errorf("valid request after the refused ones: %v, %v", l, err)
	}
}

func ptr[T any](v T) *T { return &v }

// sameLease compares leases by value, times with Equal.
func sameLease(a, b model.Lease) bool {
	ra, rb := a.ReleasedAt, b.ReleasedAt
	a.ReleasedAt, b.ReleasedAt = nil, nil
	if (ra == nil) != (rb == nil) || (ra != nil && !ra.Equal(*rb)) {
		return false
	}
	return a.ID == b.ID && a.ProxyID == b.ProxyID && a.PoolID == b.PoolID && a.PoolName == b.PoolName &&
		a.ConsumerID == b.ConsumerID && a.ConsumerName == b.ConsumerName && a.Status == b.Status &&
		a.AcquiredAt.Equal(b.AcquiredAt) && a.ExpiresAt.Equal(b.ExpiresAt) && a.FencingToken == b.FencingToken
}
