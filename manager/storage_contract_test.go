package manager

// The storage contract suite, after pharox's storage_contract_suite: every
// behaviour the request API and the broker rely on, checked below that API
// (a lease on a named proxy, the replica's candidates, what each write
// recorded) against a real embedded JetStream server, with two managers on
// separate connections standing in for two workers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/internal/testclock"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// fakeClock is the stores' injectable clock; every store of one test shares it.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New() }

// env is one test's NATS, clock and deadline.
type env struct {
	t     *testing.T
	ctx   context.Context
	clock *fakeClock
	// connect opens a connection to the test's NATS, closed with the test;
	// buckets are made with replicas.
	connect  func() *nats.Conn
	replicas int
	// cluster is set when the NATS is a cluster (storage_cluster_test.go).
	cluster *natstest.Cluster
}

// envMaker makes a case's env: newEnv (one server) or newClusterEnv.
type envMaker func(*testing.T) *env

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, clock: newFakeClock(), replicas: 1,
		connect: func() *nats.Conn { return natstest.Connect(t, srv) }}
}

// worker is one worker's manager as the suite uses it: the operations below
// the request API, with what each write recorded.
type worker struct{ *Manager }

// open starts one more worker (store and manager) on its own connection.
func (e *env) open(opts ...Option) worker {
	e.t.Helper()
	nc := e.connect()
	s, err := kvstore.Open(e.ctx, nc, kvstore.WithClock(e.clock.Now), kvstore.WithReplicas(e.replicas))
	require.NoError(e.t, err)
	m, err := New(e.ctx, s, opts...)
	require.NoError(e.t, err)
	e.t.Cleanup(m.Close)
	return worker{m}
}

func (w worker) CreatePool(ctx context.Context, name string, description *string) (model.ProxyPool, error) {
	return w.Manager.CreatePool(ctx, model.PoolCreateRequest{Name: name, Description: description})
}

func (w worker) GetPool(ctx context.Context, name string) (*record.Pool, uint64, error) {
	return w.store.GetPool(ctx, name)
}

func (w worker) UpdatePool(ctx context.Context, name string, fn func(*record.Pool) error) (*record.Pool, error) {
	rec, rev, err := w.store.UpdatePool(ctx, name, fn)
	if err == nil {
		w.replica.InstallOwnPool(name, rec, rev)
	}
	return rec, err
}

func (w worker) DeletePool(ctx context.Context, name string, force bool) ([]model.Lease, error) {
	return w.deletePool(ctx, model.PoolDeleteRequest{Name: name, Force: force})
}

func (w worker) AddProxies(ctx context.Context, pool string, inputs []model.ProxyInput) ([]model.Proxy, error) {
	return w.Manager.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: inputs})
}

func (w worker) ListProxies(ctx context.Context, pool string, status *model.ProxyStatus, limit int, cursor string) (model.ProxiesPage, error) {
	req := model.ProxiesListRequest{PoolName: pool, Status: status, Limit: &limit}
	if cursor != "" {
		req.Cursor = &cursor
	}
	return w.Manager.ListProxies(ctx, req)
}

func (w worker) Release(ctx context.Context, leaseID string, consumerName *string) (model.Lease, bool, error) {
	return w.release(ctx, model.ReleaseRequest{LeaseID: leaseID, ConsumerName: consumerName})
}

func (w worker) Renew(ctx context.Context, leaseID string, consumerName *string, d time.Duration) (model.Lease, time.Time, error) {
	secs := int(d / time.Second)
	return w.renew(ctx, model.RenewRequest{LeaseID: leaseID, ConsumerName: consumerName, DurationSeconds: &secs})
}

func (w worker) CleanupExpired(ctx context.Context) ([]model.Lease, error) { return w.cleanup(ctx) }

func (w worker) DeleteProxy(ctx context.Context, id string, force bool) ([]model.Lease, error) {
	return w.deleteProxy(ctx, id, force)
}

func (w worker) SyncProxies(ctx context.Context) error { return w.sync(ctx, kvstore.ProxiesBucket) }

// ApplyHealth sets a proxy's status and checked_at and returns the proxy
// and its status before.
func (w worker) ApplyHealth(ctx context.Context, id string, status model.ProxyStatus, at time.Time) (model.Proxy, model.ProxyStatus, error) {
	var previous model.ProxyStatus
	p, _, err := w.ApplyHealthDecision(ctx, model.HealthCheckResult{ProxyID: id, CheckedAt: at},
		func(current model.ProxyStatus) model.ProxyStatus { previous = current; return status })
	return p, previous, err
}

// must returns a call's result, failing the test on its error: the tail
// that every helper below shares.
func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		require.NoError(t, err)
		return v
	}
}

func (e *env) pool(s worker, name string) model.ProxyPool {
	e.t.Helper()
	return must[model.ProxyPool](e.t)(s.CreatePool(e.ctx, name, nil))
}

func (e *env) add(s worker, pool string, inputs ...model.ProxyInput) []model.Proxy {
	e.t.Helper()
	out := must[[]model.Proxy](e.t)(s.AddProxies(e.ctx, pool, inputs))
	require.Len(e.t, out, len(inputs))
	return out
}

func (e *env) consumer(s worker, name string) model.Consumer {
	e.t.Helper()
	return must[model.Consumer](e.t)(s.EnsureConsumer(e.ctx, name))
}

// grant acquires a lease that must be granted.
func (e *env) grant(s worker, proxyID string, c model.Consumer, d time.Duration) testGrant {
	e.t.Helper()
	return must[testGrant](e.t)(acquire(e.ctx, s, proxyID, c, d, nil))
}

func (e *env) proxy(s worker, id string) model.Proxy {
	e.t.Helper()
	return must[model.Proxy](e.t)(s.GetProxy(e.ctx, id))
}

func (e *env) lease(s worker, id string) model.Lease {
	e.t.Helper()
	return must[model.Lease](e.t)(s.GetLease(e.ctx, id))
}

// seed creates pool on s with the consumer alice and adds inputs to the
// pool, in that order: where most cases start.
func (e *env) seed(s worker, pool string, inputs ...model.ProxyInput) (model.Consumer, []model.Proxy) {
	e.t.Helper()
	e.pool(s, pool)
	c := e.consumer(s, "alice")
	return c, e.add(s, pool, inputs...)
}

// testGrant is a committed lease as the suite checks it.
type testGrant struct {
	Lease   model.Lease
	Proxy   model.Proxy
	Expired []model.Lease
}

// acquire leases the named proxy if it matches filters, retried on a lost
// race as the manager's commit does.
func acquire(ctx context.Context, s worker, proxyID string, c model.Consumer, d time.Duration, filters *model.ProxyFilters) (testGrant, error) {
	var expired []model.Lease
	for attempt := 0; attempt < 500; attempt++ {
		g, err := s.tryAcquire(ctx, proxyID, acquireParams{duration: d, filters: filters, consumer: c.Name, selector: model.SelectorFirstAvailable}, c, s.now())
		if errors.Is(err, errLostRace) {
			// Back off a little, as writers that collided should.
			retry.Sleep(ctx, retry.Backoff(attempt))
			continue
		}
		if err != nil {
			return testGrant{Expired: expired}, err
		}
		return testGrant{Lease: g.lease, Proxy: g.proxy, Expired: append(expired, g.expired...)}, nil
	}
	return testGrant{Expired: expired}, fmt.Errorf("acquire on %s: still conflicting after 500 attempts", proxyID)
}

// goOnBoth starts n goroutines counted by wg, the i-th running body on a
// for even i and on b for odd: the races between two workers the suite
// runs.
func goOnBoth(wg *sync.WaitGroup, n int, a, b worker, body func(s worker, i int)) {
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body([]worker{a, b}[i%2], i)
		}()
	}
}

// onBoth makes n calls at once as goOnBoth places them and returns their
// results and errors by i.
func onBoth[T any](n int, a, b worker, call func(worker) (T, error)) ([]T, []error) {
	got := make([]T, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	goOnBoth(&wg, n, a, b, func(s worker, i int) { got[i], errs[i] = call(s) })
	wg.Wait()
	return got, errs
}

func anyProxy(*record.Proxy) bool { return true }

func ptr[T any](v T) *T { return &v }

func in(host string, port int) model.ProxyInput {
	return model.ProxyInput{Host: host, Port: port}
}

func withStatus(p model.ProxyInput, s model.ProxyStatus) model.ProxyInput {
	p.Status = &s
	return p
}

func withMax(p model.ProxyInput, n int) model.ProxyInput {
	p.MaxConcurrency = &n
	return p
}

func ids(ps []model.Proxy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

func leaseIDs(ls []model.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.ID
	}
	return out
}

func candidates(s worker, pool string, keep func(*record.Proxy) bool) []string {
	var out []string
	s.replica.Members(pool, 0, func(rec *record.Proxy) bool {
		if keep(rec) {
			out = append(out, rec.ID)
		}
		return true
	})
	return out
}

// countOnce fails unless every id of want occurs exactly once in got, and
// nothing else does.
func countOnce(t *testing.T, want []string, got []model.Lease) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range got {
		seen[l.ID]++
	}
	for _, id := range want {
		require.Equalf(t, 1, seen[id], "lease %s reported %d times", id, seen[id])
	}
	require.Len(t, got, len(want), "leases reported: %v", leaseIDs(got))
}

// contractCases are the suite's cases, each run on an env newEnv makes.
var contractCases = []struct {
	name string
	run  func(*testing.T, envMaker)
}{
	{"consumer round trip", testConsumers},
	{"pools", testPools},
	{"finds active proxy", testFindsActiveProxy},
	{"filters", testFilters},
	{"concurrency limits", testConcurrencyLimits},
	{"release cycle", testReleaseCycle},
	{"expiry", testExpiry},
	{"expiry grace", testExpiryGrace},
	{"renew", testRenew},
	{"fencing tokens increase", testFencingTokens},
	{"ending record written late or never", testEndingRecordLate},
	{"health result apply", testHealthApply},
	{"pool stats", testPoolStats},
	{"list proxies paging", testListProxies},
	{"delete proxy", testDeleteProxy},
	{"mutate proxy under contention", testMutateContention},
}

func TestStorageContract(t *testing.T) {
	for _, c := range contractCases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newEnv) })
	}
}

func testConsumers(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()

	c1 := e.consumer(a, "alice")
	_, err := uuid.Parse(c1.ID)
	require.NoError(t, err, "consumer id is a UUID")
	require.Equal(t, "alice", c1.Name)
	require.Equal(t, c1, e.consumer(a, "alice"), "same id on every call")
	require.Equal(t, c1, e.consumer(b, "alice"), "another worker agrees on the id")

	// First registration racing on two workers still yields one id.
	got, errs := onBoth(8, a, b, func(s worker) (model.Consumer, error) { return s.EnsureConsumer(e.ctx, "bob") })
	require.NoError(t, errors.Join(errs...))
	for _, c := range got {
		require.Equal(t, got[0], c)
	}

	for _, s := range []worker{a, b} {
		list, err := s.ListConsumers(e.ctx)
		require.NoError(t, err)
		require.Equal(t, []model.Consumer{c1, got[0]}, list)
	}
}

func testPools(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()

	latam, err := a.CreatePool(e.ctx, "latam", ptr("south america"))
	require.NoError(t, err)
	require.Equal(t, "latam", latam.Name)
	require.Equal(t, ptr("south america"), latam.Description)
	require.Nil(t, latam.HealthCheck)
	_, err = uuid.Parse(latam.ID)
	require.NoError(t, err)

	_, err = a.CreatePool(e.ctx, "latam", nil)
	require.ErrorIs(t, err, model.ErrConflict)
	_, err = b.CreatePool(e.ctx, "latam", nil)
	require.ErrorIs(t, err, model.ErrConflict, "duplicate through another worker")

	rec, _, err := b.GetPool(e.ctx, "latam")
	require.NoError(t, err)
	require.Equal(t, latam, rec.Model())
	_, _, err = b.GetPool(e.ctx, "nope")
	require.ErrorIs(t, err, model.ErrPoolNotFound)

	e.clock.Advance(time.Millisecond)
	emea := e.pool(b, "emea")
	for _, s := range []worker{a, b} {
		list, err := s.ListPools(e.ctx)
		require.NoError(t, err)
		require.Equal(t, []model.ProxyPool{latam, emea}, list, "oldest first")
	}

	// Update, seen by the other worker.
	hc := &model.HealthCheck{Enabled: true, IntervalSeconds: 30, FailureThreshold: 3,
		Options: &model.HealthCheckOptions{TargetURL: "https://example.com", Timeout: 5, Attempts: 1, ExpectedStatusCodes: []int{200}, SlowThresholdMs: 2000, AllowRedirects: true, Headers: map[string]string{}}}
	up, err := a.UpdatePool(e.ctx, "latam", func(r *record.Pool) error {
		r.Description = ptr("changed")
		r.HealthCheck = hc
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, ptr("changed"), up.Description)
	rec, _, err = b.GetPool(e.ctx, "latam")
	require.NoError(t, err)
	require.Equal(t, latam.ID, rec.ID)
	require.Equal(t, ptr("changed"), rec.Description)
	require.Equal(t, hc, rec.HealthCheck)
	list, err := b.ListPools(e.ctx)
	require.NoError(t, err)
	require.Equal(t, ptr("changed"), list[0].Description)

	boom := errors.New("boom")
	_, err = a.UpdatePool(e.ctx, "latam", func(r *record.Pool) error {
		r.Description = ptr("never")
		return boom
	})
	require.ErrorIs(t, err, boom)
	rec, _, err = a.GetPool(e.ctx, "latam")
	require.NoError(t, err)
	require.Equal(t, ptr("changed"), rec.Description, "a failed update changes nothing")
	_, err = a.UpdatePool(e.ctx, "nope", func(*record.Pool) error { return nil })
	require.ErrorIs(t, err, model.ErrPoolNotFound)

	// Delete with live leases: refused without force, nothing changed.
	px := e.add(a, "latam", in("10.0.0.1", 8080), in("10.0.0.2", 8080), in("10.0.0.3", 8080))
	c := e.consumer(a, "alice")
	g1 := e.grant(a, px[0].ID, c, time.Minute)
	g2 := e.grant(b, px[1].ID, c, time.Minute)
	_, err = b.DeletePool(e.ctx, "latam", false)
	require.ErrorIs(t, err, model.ErrConflict)
	_, _, err = a.GetPool(e.ctx, "latam")
	require.NoError(t, err)
	for _, p := range px {
		e.proxy(a, p.ID)
	}
	require.Equal(t, model.LeaseActive, e.lease(a, g1.Lease.ID).Status)
	require.Equal(t, model.LeaseActive, e.lease(a, g2.Lease.ID).Status)

	// Forced: the live leases come back released and read back released.
	e.clock.Advance(time.Second)
	released, err := b.DeletePool(e.ctx, "latam", true)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{g1.Lease.ID, g2.Lease.ID}, leaseIDs(released))
	for _, l := range released {
		require.Equal(t, model.LeaseReleased, l.Status)
		require.NotNil(t, l.ReleasedAt)
		require.True(t, l.ReleasedAt.Equal(e.clock.Now()))
		for _, s := range []worker{a, b} {
			got := e.lease(s, l.ID)
			require.Equal(t, model.LeaseReleased, got.Status)
			require.True(t, got.ReleasedAt.Equal(*l.ReleasedAt))
		}
	}
	for _, s := range []worker{a, b} {
		_, _, err = s.GetPool(e.ctx, "latam")
		require.ErrorIs(t, err, model.ErrPoolNotFound)
		for _, p := range px {
			_, err = s.GetProxy(e.ctx, p.ID)
			require.ErrorIs(t, err, model.ErrProxyNotFound)
		}
		list, err := s.ListPools(e.ctx)
		require.NoError(t, err)
		require.Equal(t, []model.ProxyPool{emea}, list)
		_, err = s.PoolStats(e.ctx, "latam")
		require.ErrorIs(t, err, model.ErrPoolNotFound, "stats of a deleted pool")
	}

	// A delete acknowledged on one worker is seen at once by the reads of
	// every worker (guarantee 7), also right after the pool was written.
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("tmp-%d", i)
		w, r := a, b
		if i%2 == 1 {
			w, r = b, a
		}
		e.pool(r, name)
		e.add(r, name, in("10.9.9.9", 9))
		_, err := w.DeletePool(e.ctx, name, false)
		require.NoError(t, err)
		for _, s := range []worker{r, w} {
			_, err = s.PoolStats(e.ctx, name)
			require.ErrorIs(t, err, model.ErrPoolNotFound, "stats of deleted pool %s", name)
			_, err = s.ListProxies(e.ctx, name, nil, 10, "")
			require.ErrorIs(t, err, model.ErrPoolNotFound, "proxies of deleted pool %s", name)
		}
	}

	// Without leases no force is needed; unknown pools are not found; a
	// deleted name can be taken again.
	released, err = a.DeletePool(e.ctx, "emea", false)
	require.NoError(t, err)
	require.Empty(t, released)
	_, err = a.DeletePool(e.ctx, "emea", false)
	require.ErrorIs(t, err, model.ErrPoolNotFound)
	again := e.pool(b, "latam")
	require.NotEqual(t, latam.ID, again.ID)
	st, err := a.PoolStats(e.ctx, "latam")
	require.NoError(t, err)
	require.Zero(t, st.TotalProxies, "a re-created pool starts empty")
}

func testFindsActiveProxy(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	pool := e.pool(a, "main")
	c := e.consumer(a, "alice")

	px := e.add(a, "main",
		withStatus(in("10.0.0.1", 1), model.ProxyInactive),
		withStatus(in("10.0.0.2", 2), model.ProxyBanned),
		withStatus(in("10.0.0.3", 3), model.ProxySlow),
		in("10.0.0.4", 4), // status defaults to active
		withStatus(in("10.0.0.5", 5), model.ProxyActive),
	)
	want := []model.ProxyStatus{model.ProxyInactive, model.ProxyBanned, model.ProxySlow, model.ProxyActive, model.ProxyActive}
	for i, p := range px {
		require.Equal(t, want[i], p.Status)
		require.Equal(t, pool.ID, p.PoolID)
		require.Equal(t, "main", p.PoolName)
		require.Equal(t, i+1, p.Port)
		require.Equal(t, model.ProtocolHTTP, p.Protocol)
		require.Equal(t, fmt.Sprintf("http://10.0.0.%d:%d", i+1, i+1), p.URL)
		require.Zero(t, p.CurrentLeases)
		require.Nil(t, p.CheckedAt)
		require.Equal(t, p, e.proxy(b, p.ID))
	}
	more := e.add(b, "main", in("10.0.0.6", 6))
	all := append(ids(px), more[0].ID)
	require.Equal(t, all, candidates(b, "main", anyProxy), "candidates in added order")
	// Candidates are the replica as it is; synced, it holds another
	// worker's adds in the same order.
	require.NoError(t, a.SyncProxies(e.ctx))
	require.Equal(t, all, candidates(a, "main", anyProxy), "the same order on another worker")

	// Only active proxies are ever granted.
	for _, p := range px[:3] {
		_, err := acquire(e.ctx, a, p.ID, c, time.Minute, nil)
		require.ErrorIs(t, err, errNotEligible, "status %s", p.Status)
		require.Zero(t, e.proxy(a, p.ID).CurrentLeases)
	}
	_, err := acquire(e.ctx, a, uuid.NewString(), c, time.Minute, nil)
	require.ErrorIs(t, err, errNotEligible, "unknown proxy")

	active := candidates(a, "main", func(r *record.Proxy) bool { return r.Status == model.ProxyActive })
	require.Equal(t, []string{px[3].ID, px[4].ID, more[0].ID}, active)
	g := e.grant(a, active[0], c, time.Minute)
	require.Equal(t, px[3].ID, g.Proxy.ID)
	require.Equal(t, 1, g.Proxy.CurrentLeases)
	require.Equal(t, px[3].ID, g.Lease.ProxyID)
	require.Equal(t, pool.ID, g.Lease.PoolID)
	require.Equal(t, "main", g.Lease.PoolName)
	require.Equal(t, c.ID, g.Lease.ConsumerID)
	require.Equal(t, c.Name, g.Lease.ConsumerName)
	require.Equal(t, model.LeaseActive, g.Lease.Status)
	require.True(t, g.Lease.AcquiredAt.Equal(e.clock.Now()))
	require.True(t, g.Lease.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)))
	require.Nil(t, g.Lease.ReleasedAt)
	require.Empty(t, g.Expired)
	_, err = uuid.Parse(g.Lease.ID)
	require.NoError(t, err)
	require.Equal(t, g.Lease, e.lease(b, g.Lease.ID))
	require.Equal(t, 1, e.proxy(b, px[3].ID).CurrentLeases)

	// A proxy that stops being active stops being granted.
	_, _, err = b.ApplyHealth(e.ctx, px[4].ID, model.ProxyBanned, e.clock.Now())
	require.NoError(t, err)
	_, err = acquire(e.ctx, a, px[4].ID, c, time.Minute, nil)
	require.ErrorIs(t, err, errNotEligible)
}

func testFilters(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a := e.open()
	e.pool(a, "geo")
	c := e.consumer(a, "alice")

	mk := func(host, src, country, city, isp string, asn int64, lat, lon *float64) model.ProxyInput {
		p := in(host, 3128)
		p.Source, p.Country, p.City, p.ISP, p.ASN = ptr(src), ptr(country), ptr(city), ptr(isp), ptr(asn)
		p.Latitude, p.Longitude = lat, lon
		return p
	}
	px := e.add(a, "geo",
		mk("nyc", "scraped", "US", "New York", "Verizon", 701, ptr(40.7128), ptr(-74.0060)),
		mk("la", "paid", "US", "Los Angeles", "Comcast", 7922, ptr(34.0522), ptr(-118.2437)),
		mk("ber", "paid", "DE", "Berlin", "DTAG", 3320, ptr(52.5200), ptr(13.4050)),
		mk("sao", "scraped", "BR", "Sao Paulo", "Vivo", 701, nil, nil),
	)
	nyc, la, ber, sao := px[0].ID, px[1].ID, px[2].ID, px[3].ID

	cases := []struct {
		name string
		f    *model.ProxyFilters
		want []string
	}{
		{"none", nil, []string{nyc, la, ber, sao}},
		{"country", &model.ProxyFilters{Country: ptr("US")}, []string{nyc, la}},
		{"city", &model.ProxyFilters{City: ptr("Berlin")}, []string{ber}},
		{"country and city", &model.ProxyFilters{Country: ptr("US"), City: ptr("Berlin")}, nil},
		{"source", &model.ProxyFilters{Source: ptr("scraped")}, []string{nyc, sao}},
		{"isp", &model.ProxyFilters{ISP: ptr("Comcast")}, []string{la}},
		{"asn", &model.ProxyFilters{ASN: ptr(int64(701))}, []string{nyc, sao}},
		{"exact coords", &model.ProxyFilters{Latitude: ptr(40.7128), Longitude: ptr(-74.0060)}, []string{nyc}},
		{"coords off by more than 1e-6", &model.ProxyFilters{Latitude: ptr(40.7129), Longitude: ptr(-74.0060)}, nil},
		{"radius 500 km of NYC", &model.ProxyFilters{Latitude: ptr(40.7128), Longitude: ptr(-74.0060), RadiusKm: ptr(500.0)}, []string{nyc}},
		{"radius 5000 km of NYC", &model.ProxyFilters{Latitude: ptr(40.7128), Longitude: ptr(-74.0060), RadiusKm: ptr(5000.0)}, []string{nyc, la}},
		{"radius 10000 km of NYC", &model.ProxyFilters{Latitude: ptr(40.7128), Longitude: ptr(-74.0060), RadiusKm: ptr(10000.0)}, []string{nyc, la, ber}},
		{"any_of", &model.ProxyFilters{AnyOf: []model.ProxyFilters{{Country: ptr("DE")}, {ASN: ptr(int64(701))}}}, []string{nyc, ber, sao}},
		{"all_of", &model.ProxyFilters{AllOf: []model.ProxyFilters{{Source: ptr("paid")}, {Country: ptr("US")}}}, []string{la}},
		{"none_of", &model.ProxyFilters{NoneOf: []model.ProxyFilters{{Country: ptr("US")}}}, []string{ber, sao}},
		{"nested", &model.ProxyFilters{Source: ptr("paid"), AnyOf: []model.ProxyFilters{{City: ptr("Berlin")}, {NoneOf: []model.ProxyFilters{{ISP: ptr("DTAG")}}}}}, []string{la, ber}},
	}
	for _, tc := range cases {
		if tc.f != nil {
			require.NoError(t, tc.f.Validate(), tc.name)
		}
		got := candidates(a, "geo", func(r *record.Proxy) bool { return tc.f.Matches(r.Attrs()) })
		require.Equal(t, tc.want, got, tc.name)
	}

	// TryAcquire re-checks eligibility on the record it writes: a refusal
	// is ErrNotEligible and leaves no holder.
	de := &model.ProxyFilters{Country: ptr("DE")}
	_, err := acquire(e.ctx, a, nyc, c, time.Minute, de)
	require.ErrorIs(t, err, errNotEligible)
	require.Zero(t, e.proxy(a, nyc).CurrentLeases)
	g, err := acquire(e.ctx, a, ber, c, time.Minute, de)
	require.NoError(t, err)
	require.Equal(t, ber, g.Proxy.ID)
	require.Equal(t, ptr("DE"), g.Proxy.Country)
}

func testConcurrencyLimits(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "lim", withMax(in("10.0.0.1", 1), 2), in("10.0.0.2", 2), withMax(in("10.0.0.3", 3), 3))
	limited, unlimited, raced := px[0].ID, px[1].ID, px[2].ID
	require.Equal(t, ptr(2), px[0].MaxConcurrency)
	require.Nil(t, px[1].MaxConcurrency)

	g1 := e.grant(a, limited, c, time.Minute)
	g2 := e.grant(b, limited, c, time.Minute)
	require.NotEqual(t, g1.Lease.ID, g2.Lease.ID)
	e.leaderChange()
	require.Equal(t, 2, g2.Proxy.CurrentLeases)
	for _, s := range []worker{a, b} {
		_, err := acquire(e.ctx, s, limited, c, time.Minute, nil)
		require.ErrorIs(t, err, errNotEligible)
	}
	require.Equal(t, 2, e.proxy(b, limited).CurrentLeases)

	const many = 25
	for i := 0; i < many; i++ {
		e.grant(a, unlimited, c, time.Minute)
	}
	require.Equal(t, many, e.proxy(b, unlimited).CurrentLeases)

	// Guarantee 1 under a race of two workers: exactly max_concurrency win.
	const racers = 12
	_, errs := onBoth(racers, a, b, func(s worker) (testGrant, error) { return acquire(e.ctx, s, raced, c, time.Minute, nil) })
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		require.ErrorIs(t, err, errNotEligible)
	}
	require.Equal(t, 3, won)
	require.Equal(t, 3, e.proxy(a, raced).CurrentLeases)
}

func testReleaseCycle(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "rel", withMax(in("10.0.0.1", 1), 1))
	p := px[0]

	g := e.grant(a, p.ID, c, time.Minute)
	_, err := acquire(e.ctx, b, p.ID, c, time.Minute, nil)
	require.ErrorIs(t, err, errNotEligible, "the slot is taken")
	e.leaderChange()

	e.clock.Advance(5 * time.Second)
	_, changed, err := b.Release(e.ctx, g.Lease.ID, ptr("mallory"))
	require.ErrorIs(t, err, model.ErrForbidden)
	require.False(t, changed)
	require.Equal(t, g.Lease, e.lease(a, g.Lease.ID), "a forbidden release changes nothing")
	require.Equal(t, 1, e.proxy(a, p.ID).CurrentLeases)

	l, changed, err := b.Release(e.ctx, g.Lease.ID, ptr("alice"))
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, model.LeaseReleased, l.Status)
	require.NotNil(t, l.ReleasedAt)
	require.True(t, l.ReleasedAt.Equal(e.clock.Now()))
	require.Equal(t, g.Lease.FencingToken, l.FencingToken)
	require.Equal(t, l, e.lease(a, g.Lease.ID))
	require.Zero(t, e.proxy(a, p.ID).CurrentLeases)

	// A second release is not an error and counts nothing.
	e.clock.Advance(5 * time.Second)
	for _, s := range []worker{a, b} {
		again, changed, err := s.Release(e.ctx, g.Lease.ID, nil)
		require.NoError(t, err)
		require.False(t, changed)
		require.Equal(t, model.LeaseReleased, again.Status)
		require.True(t, again.ReleasedAt.Equal(*l.ReleasedAt), "released_at unchanged")
	}
	require.Equal(t, l, e.lease(b, g.Lease.ID))

	_, _, err = a.Release(e.ctx, uuid.NewString(), nil)
	require.ErrorIs(t, err, model.ErrLeaseNotFound)
	_, err = a.GetLease(e.ctx, uuid.NewString())
	require.ErrorIs(t, err, model.ErrLeaseNotFound)

	// The slot is free again, on either worker.
	g2 := e.grant(b, p.ID, c, time.Minute)
	require.NotEqual(t, g.Lease.ID, g2.Lease.ID)
	require.Equal(t, 1, g2.Proxy.CurrentLeases)
}

func testExpiry(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "exp", withMax(in("10.0.0.1", 1), 1), withMax(in("10.0.0.2", 2), 1), in("10.0.0.3", 3))
	one := px[0].ID

	// An expired lease never blocks an acquire; the committing acquire
	// records it, once.
	old := e.grant(a, one, c, time.Second)
	e.leaderChange()
	_, err := acquire(e.ctx, b, one, c, time.Second, nil)
	require.ErrorIs(t, err, errNotEligible)
	e.clock.Advance(1500 * time.Millisecond)

	before := e.lease(b, old.Lease.ID)
	require.Equal(t, model.LeaseExpired, before.Status, "past expires_at reads expired before any sweep")
	require.True(t, before.ReleasedAt.Equal(old.Lease.ExpiresAt))
	require.Zero(t, e.proxy(a, one).CurrentLeases)

	next := e.grant(b, one, c, time.Minute)
	countOnce(t, []string{old.Lease.ID}, next.Expired)
	require.Equal(t, model.LeaseExpired, next.Expired[0].Status)
	require.True(t, next.Expired[0].ReleasedAt.Equal(old.Lease.ExpiresAt))
	require.Equal(t, 1, e.proxy(a, one).CurrentLeases)
	for _, s := range []worker{a, b} {
		got := e.lease(s, old.Lease.ID)
		require.Equal(t, model.LeaseExpired, got.Status)
		require.True(t, got.ReleasedAt.Equal(got.ExpiresAt), "released_at = expires_at")
		require.Equal(t, old.Lease.FencingToken, got.FencingToken)
	}
	// Releasing it now replies as it is and changes nothing.
	l, changed, err := a.Release(e.ctx, old.Lease.ID, nil)
	require.NoError(t, err)
	require.False(t, changed)
	require.Equal(t, model.LeaseExpired, l.Status)
	require.Equal(t, 1, e.proxy(a, one).CurrentLeases)

	// The sweep: each expired lease once, then none; the one recorded by
	// the acquire above is not counted again.
	var want []string
	for _, p := range px[1:] {
		want = append(want, e.grant(a, p.ID, c, time.Second).Lease.ID)
	}
	want = append(want, e.grant(a, px[2].ID, c, time.Second).Lease.ID)
	e.clock.Advance(2 * time.Second) // "next" (1 min) stays active
	swept, err := b.CleanupExpired(e.ctx)
	require.NoError(t, err, "a sweep on another worker sees the leases at once")
	countOnce(t, want, swept)
	for _, l := range swept {
		require.Equal(t, model.LeaseExpired, l.Status)
		require.True(t, l.ReleasedAt.Equal(l.ExpiresAt))
		require.Equal(t, l, e.lease(a, l.ID))
	}
	for _, s := range []worker{b, a} {
		swept, err = s.CleanupExpired(e.ctx)
		require.NoError(t, err)
		require.Empty(t, swept, "a second sweep finds nothing")
	}
	require.Equal(t, model.LeaseActive, e.lease(a, next.Lease.ID).Status)
	require.Equal(t, 1, e.proxy(b, one).CurrentLeases)

	// Two workers sweeping the same expired leases at once count each once.
	for round := 0; round < 3; round++ {
		var leases []string
		for i, p := range px {
			if i == 0 {
				continue // holds "next"
			}
			for j := 0; j < 1+i; j++ {
				s := a
				if j%2 == 1 {
					s = b
				}
				if p.MaxConcurrency != nil && j >= *p.MaxConcurrency {
					break
				}
				leases = append(leases, e.grant(s, p.ID, c, time.Second).Lease.ID)
			}
		}
		e.clock.Advance(2 * time.Second)
		require.NoError(t, a.SyncProxies(e.ctx))
		require.NoError(t, b.SyncProxies(e.ctx))
		results, errs := onBoth(4, a, b, func(s worker) ([]model.Lease, error) { return s.CleanupExpired(e.ctx) })
		require.NoError(t, errors.Join(errs...))
		var all []model.Lease
		for _, r := range results {
			all = append(all, r...)
		}
		countOnce(t, leases, all)
		for _, id := range leases {
			require.Equal(t, model.LeaseExpired, e.lease(b, id).Status)
		}
	}
	require.Equal(t, model.LeaseActive, e.lease(a, next.Lease.ID).Status, "an unexpired lease is never swept")
	require.Equal(t, 1, e.proxy(a, one).CurrentLeases)
}

func testExpiryGrace(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(WithExpiryGrace(500*time.Millisecond)), e.open(WithExpiryGrace(500*time.Millisecond))
	c, px := e.seed(a, "grace", withMax(in("10.0.0.1", 1), 1))
	p := px[0]

	g := e.grant(a, p.ID, c, time.Second)
	// Past expires_at but within the grace: still held everywhere.
	e.clock.Advance(1200 * time.Millisecond)
	for _, s := range []worker{a, b} {
		require.Equal(t, model.LeaseActive, e.lease(s, g.Lease.ID).Status)
		require.Equal(t, 1, e.proxy(s, p.ID).CurrentLeases)
		_, err := acquire(e.ctx, s, p.ID, c, time.Second, nil)
		require.ErrorIs(t, err, errNotEligible)
		swept, err := s.CleanupExpired(e.ctx)
		require.NoError(t, err)
		require.Empty(t, swept)
		st, err := s.PoolStats(e.ctx, "grace")
		require.NoError(t, err)
		require.Equal(t, 1, st.TotalLeases)
	}

	// Past the grace: expired, at its expires_at, and the slot is free.
	e.clock.Advance(400 * time.Millisecond)
	got := e.lease(b, g.Lease.ID)
	require.Equal(t, model.LeaseExpired, got.Status)
	require.True(t, got.ReleasedAt.Equal(g.Lease.ExpiresAt))
	next := e.grant(b, p.ID, c, time.Minute)
	countOnce(t, []string{g.Lease.ID}, next.Expired)
	swept, err := a.CleanupExpired(e.ctx)
	require.NoError(t, err)
	require.Empty(t, swept)
}

func testRenew(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "renew", withMax(in("10.0.0.1", 1), 1), in("10.0.0.2", 2))
	p := px[0].ID

	g := e.grant(a, p, c, 2*time.Second)
	e.leaderChange()
	e.clock.Advance(time.Second)
	l, prev, err := b.Renew(e.ctx, g.Lease.ID, ptr("alice"), 10*time.Second)
	require.NoError(t, err)
	require.True(t, prev.Equal(g.Lease.ExpiresAt), "previous expiry")
	require.Equal(t, model.LeaseActive, l.Status)
	require.True(t, l.ExpiresAt.Equal(e.clock.Now().Add(10*time.Second)))
	require.Equal(t, g.Lease.FencingToken, l.FencingToken, "a renew keeps the fencing token")
	require.True(t, l.AcquiredAt.Equal(g.Lease.AcquiredAt))
	require.Equal(t, l, e.lease(a, g.Lease.ID))

	_, _, err = a.Renew(e.ctx, g.Lease.ID, ptr("mallory"), time.Hour)
	require.ErrorIs(t, err, model.ErrForbidden)
	require.Equal(t, l, e.lease(b, g.Lease.ID), "a forbidden renew changes nothing")
	_, _, err = a.Renew(e.ctx, uuid.NewString(), nil, time.Hour)
	require.ErrorIs(t, err, model.ErrLeaseNotFound)

	// Past the old expiry, before the new one: still held, never swept.
	e.clock.Advance(5 * time.Second)
	for _, s := range []worker{a, b} {
		require.Equal(t, model.LeaseActive, e.lease(s, g.Lease.ID).Status)
		require.Equal(t, 1, e.proxy(s, p).CurrentLeases)
		_, err = acquire(e.ctx, s, p, c, time.Minute, nil)
		require.ErrorIs(t, err, errNotEligible)
		swept, err := s.CleanupExpired(e.ctx)
		require.NoError(t, err)
		require.Empty(t, swept)
	}

	// Ended leases cannot be renewed: released, or expired without a sweep.
	_, changed, err := a.Release(e.ctx, g.Lease.ID, nil)
	require.NoError(t, err)
	require.True(t, changed)
	released := e.lease(a, g.Lease.ID)
	_, _, err = b.Renew(e.ctx, g.Lease.ID, nil, time.Minute)
	require.ErrorIs(t, err, model.ErrLeaseNotActive)
	require.Equal(t, released, e.lease(b, g.Lease.ID))
	require.Zero(t, e.proxy(b, p).CurrentLeases)

	short := e.grant(b, px[1].ID, c, time.Second)
	e.clock.Advance(2 * time.Second)
	_, _, err = a.Renew(e.ctx, short.Lease.ID, nil, time.Minute)
	require.ErrorIs(t, err, model.ErrLeaseNotActive)
	require.Equal(t, model.LeaseExpired, e.lease(a, short.Lease.ID).Status)
	require.Zero(t, e.proxy(a, px[1].ID).CurrentLeases)
}

func testFencingTokens(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "fence", withMax(in("10.0.0.1", 1), 1), in("10.0.0.2", 2))
	p, other := px[0].ID, px[1].ID

	var last uint64
	for i := 0; i < 12; i++ {
		if i%4 == 3 {
			e.leaderChange() // tokens go on increasing under a new leader
		}
		s := []worker{a, b}[i%2]
		g := e.grant(s, p, c, time.Second)
		require.Greater(t, g.Lease.FencingToken, last, "lease %d", i)
		last = g.Lease.FencingToken
		// The revision as the stream's leader has it (a direct get may be
		// answered by a replica that has not applied the write yet).
		_, rev, err := a.store.GetProxy(e.ctx, p)
		require.NoError(t, err)
		require.Equal(t, rev, last, "lease %d: the token is the revision of its commit", i)
		require.Equal(t, last, e.lease(b, g.Lease.ID).FencingToken)
		// Later writes of the same record keep the token, on every worker.
		_, _, err = b.ApplyHealth(e.ctx, p, model.ProxyActive, e.clock.Now())
		require.NoError(t, err)
		require.Equal(t, last, e.lease(a, g.Lease.ID).FencingToken)
		e.grant(s, other, c, time.Minute) // writes elsewhere in between
		var ended model.Lease
		switch i % 3 {
		case 0:
			var changed bool
			ended, changed, err = s.Release(e.ctx, g.Lease.ID, nil)
			require.NoError(t, err)
			require.True(t, changed)
		case 1:
			e.clock.Advance(2 * time.Second) // let it expire unswept
			ended = e.lease(b, g.Lease.ID)
		case 2:
			e.clock.Advance(2 * time.Second)
			swept, err := s.CleanupExpired(e.ctx)
			require.NoError(t, err)
			require.Len(t, swept, 1)
			ended = swept[0]
		}
		require.NotEqual(t, model.LeaseActive, ended.Status)
		require.Equal(t, last, ended.FencingToken, "lease %d: an ended lease keeps its token", i)
		require.Equal(t, last, e.lease(a, g.Lease.ID).FencingToken)
	}

	// Concurrent leases of one proxy get distinct tokens.
	grants, errs := onBoth(16, a, b, func(s worker) (testGrant, error) { return acquire(e.ctx, s, other, c, time.Minute, nil) })
	require.NoError(t, errors.Join(errs...))
	seen := map[uint64]bool{}
	for _, g := range grants {
		tok := g.Lease.FencingToken
		require.False(t, seen[tok], "token %d handed out twice", tok)
		seen[tok] = true
		// Each holder's token survives the writes that added the others.
		require.Equal(t, tok, e.lease(a, g.Lease.ID).FencingToken)
		require.Equal(t, tok, e.lease(b, g.Lease.ID).FencingToken)
	}
	for i, g := range grants {
		l, changed, err := []worker{b, a}[i%2].Release(e.ctx, g.Lease.ID, nil)
		require.NoError(t, err)
		require.True(t, changed)
		require.Equal(t, g.Lease.FencingToken, l.FencingToken)
	}
}

func testHealthApply(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "health", in("10.0.0.1", 1), in("10.0.0.2", 2))
	p, hot := px[0].ID, px[1].ID

	g := e.grant(a, p, c, time.Minute)
	at := e.clock.Now().Add(-time.Second)
	got, prev, err := b.ApplyHealth(e.ctx, p, model.ProxySlow, at)
	require.NoError(t, err)
	require.Equal(t, model.ProxyActive, prev)
	require.Equal(t, model.ProxySlow, got.Status)
	require.NotNil(t, got.CheckedAt)
	require.True(t, got.CheckedAt.Equal(at))
	require.Equal(t, 1, got.CurrentLeases, "the lease held survives")
	read := e.proxy(a, p)
	require.Equal(t, model.ProxySlow, read.Status)
	require.True(t, read.CheckedAt.Equal(at))
	require.Equal(t, model.LeaseActive, e.lease(a, g.Lease.ID).Status)

	at2 := at.Add(time.Second)
	got, prev, err = a.ApplyHealth(e.ctx, p, model.ProxyActive, at2)
	require.NoError(t, err)
	require.Equal(t, model.ProxySlow, prev)
	require.Equal(t, model.ProxyActive, got.Status)
	require.True(t, got.CheckedAt.Equal(at2))
	_, _, err = a.ApplyHealth(e.ctx, uuid.NewString(), model.ProxyActive, at2)
	require.ErrorIs(t, err, model.ErrProxyNotFound)

	// Acquires, releases and health applies racing on one proxy from two
	// workers: no holder is lost or left behind.
	const acquirers, perAcquirer, appliers, perApplier = 4, 20, 2, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted, released := 0, 0
	var held []string
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	goOnBoth(&wg, acquirers, a, b, func(s worker, _ int) {
		for i := 0; i < perAcquirer; i++ {
			g, err := acquire(e.ctx, s, hot, c, time.Minute, nil)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			granted++
			mu.Unlock()
			if i%3 == 0 {
				_, changed, err := s.Release(e.ctx, g.Lease.ID, nil)
				if err != nil || !changed {
					fail(fmt.Errorf("release %s: changed=%v err=%v", g.Lease.ID, changed, err))
					return
				}
				mu.Lock()
				released++
				mu.Unlock()
			} else {
				mu.Lock()
				held = append(held, g.Lease.ID)
				mu.Unlock()
			}
		}
	})
	goOnBoth(&wg, appliers, a, b, func(s worker, _ int) {
		for i := 0; i < perApplier; i++ {
			if _, _, err := s.ApplyHealth(e.ctx, hot, model.ProxyActive, at.Add(time.Duration(i)*time.Millisecond)); err != nil {
				fail(err)
				return
			}
		}
	})
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Equal(t, acquirers*perAcquirer, granted)
	for _, s := range []worker{a, b} {
		require.Equal(t, granted-released, e.proxy(s, hot).CurrentLeases)
		st, err := s.PoolStats(e.ctx, "health")
		require.NoError(t, err)
		require.Equal(t, granted-released+1, st.TotalLeases)
	}
	for _, id := range held {
		require.Equal(t, model.LeaseActive, e.lease(a, id).Status)
	}
}

func testPoolStats(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	e.pool(a, "stats")
	c := e.consumer(a, "alice")

	snap := func(s worker) model.PoolStatsSnapshot {
		t.Helper()
		st, err := s.PoolStats(e.ctx, "stats")
		require.NoError(t, err)
		require.Equal(t, "stats", st.PoolName)
		require.True(t, st.CollectedAt.Equal(e.clock.Now()))
		return st
	}
	type nums struct{ total, active, available, leased, leases int }
	check := func(s worker, want nums, msg string) {
		t.Helper()
		st := snap(s)
		require.Equal(t, want, nums{st.TotalProxies, st.ActiveProxies, st.AvailableProxies, st.LeasedProxies, st.TotalLeases}, msg)
	}

	check(a, nums{}, "empty pool")
	_, err := a.PoolStats(e.ctx, "nope")
	require.ErrorIs(t, err, model.ErrPoolNotFound)

	px := e.add(a, "stats", withMax(in("10.0.0.1", 1), 1), in("10.0.0.2", 2), withStatus(in("10.0.0.3", 3), model.ProxyInactive))
	limited, open, inactive := px[0].ID, px[1].ID, px[2].ID
	check(b, nums{3, 2, 2, 0, 0}, "added through a, read through b")

	g1 := e.grant(a, limited, c, time.Minute)
	g2 := e.grant(a, open, c, 10*time.Second)
	// limited is full, open has no limit, inactive never counts as available.
	for _, s := range []worker{a, b} {
		check(s, nums{3, 2, 1, 2, 2}, "after two leases")
	}

	// Every write through one worker shows at once in the other's stats.
	_, changed, err := b.Release(e.ctx, g1.Lease.ID, nil)
	require.NoError(t, err)
	require.True(t, changed)
	check(a, nums{3, 2, 2, 1, 1}, "release through b")
	e.grant(b, open, c, time.Minute)
	check(a, nums{3, 2, 2, 1, 2}, "acquire through b")
	_, _, err = b.ApplyHealth(e.ctx, inactive, model.ProxyActive, e.clock.Now())
	require.NoError(t, err)
	check(a, nums{3, 3, 3, 1, 2}, "health through b")
	_, _, err = a.ApplyHealth(e.ctx, open, model.ProxyBanned, e.clock.Now())
	require.NoError(t, err)
	check(b, nums{3, 2, 2, 1, 2}, "a leased banned proxy is leased but not active")
	e.add(b, "stats", withStatus(in("10.0.0.4", 4), model.ProxySlow))
	check(a, nums{4, 2, 2, 1, 2}, "add through b")
	e.grant(b, inactive, c, time.Minute)
	check(a, nums{4, 2, 2, 2, 3}, "acquire on an unlimited proxy keeps it available")
	// An expired lease stops counting before any sweep.
	e.clock.Advance(15 * time.Second)
	require.Equal(t, model.LeaseExpired, e.lease(a, g2.Lease.ID).Status)
	check(a, nums{4, 2, 2, 2, 2}, "expired, unswept")
	_, err = a.DeleteProxy(e.ctx, inactive, true)
	require.NoError(t, err)
	check(b, nums{3, 1, 1, 1, 1}, "delete through a")
}

func testListProxies(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	e.pool(a, "list")
	statuses := []model.ProxyStatus{model.ProxyActive, model.ProxyInactive, model.ProxyActive, model.ProxyBanned, model.ProxyActive, model.ProxyInactive, model.ProxyActive}
	var inputs []model.ProxyInput
	for i, st := range statuses {
		inputs = append(inputs, withStatus(in(fmt.Sprintf("10.0.0.%d", i), 8000+i), st))
	}
	// Two adds, through both workers: added order spans them.
	px := append(e.add(a, "list", inputs[:4]...), e.add(b, "list", inputs[4:]...)...)

	pageOf := func(s worker, status *model.ProxyStatus, limit int, cursor string) ([]string, *string) {
		t.Helper()
		page, err := s.ListProxies(e.ctx, "list", status, limit, cursor)
		require.NoError(t, err)
		require.NotNil(t, page.Proxies)
		return ids(page.Proxies), page.NextCursor
	}
	walk := func(s worker, status *model.ProxyStatus, limit int) [][]string {
		t.Helper()
		var pages [][]string
		cursor := ""
		for i := 0; i < 20; i++ {
			got, next := pageOf(s, status, limit, cursor)
			pages = append(pages, got)
			if next == nil {
				return pages
			}
			require.NotEmpty(t, *next)
			cursor = *next
			s = map[worker]worker{a: b, b: a}[s] // cursors work on any worker
		}
		t.Fatal("paging does not end")
		return nil
	}
	all := ids(px)
	for _, s := range []worker{a, b} {
		require.Equal(t, [][]string{all[:3], all[3:6], all[6:]}, walk(s, nil, 3))
		require.Equal(t, [][]string{all}, walk(s, nil, 7), "exactly limit left: no next cursor")
		require.Equal(t, [][]string{all}, walk(s, nil, 100))
		require.Equal(t, [][]string{{all[0], all[2]}, {all[4], all[6]}}, walk(s, ptr(model.ProxyActive), 2))
		require.Equal(t, [][]string{{all[1], all[5]}}, walk(s, ptr(model.ProxyInactive), 5))
		require.Equal(t, [][]string{{all[3]}}, walk(s, ptr(model.ProxyBanned), 1))
		require.Equal(t, [][]string{{}}, walk(s, ptr(model.ProxySlow), 5))
	}
	page, err := a.ListProxies(e.ctx, "list", nil, 2, "")
	require.NoError(t, err)
	require.Equal(t, px[:2], page.Proxies, "full proxy models")

	for _, bad := range []string{"xyz", "-1", "1.5", "\x00"} {
		_, err := a.ListProxies(e.ctx, "list", nil, 3, bad)
		require.ErrorIs(t, err, model.ErrBadRequest, "cursor %q", bad)
	}
	_, err = a.ListProxies(e.ctx, "nope", nil, 3, "")
	require.ErrorIs(t, err, model.ErrPoolNotFound)

	// A deleted proxy drops out of the pages at once.
	_, err = b.DeleteProxy(e.ctx, all[2], false)
	require.NoError(t, err)
	got, next := pageOf(a, ptr(model.ProxyActive), 10, "")
	require.Nil(t, next)
	require.Equal(t, []string{all[0], all[4], all[6]}, got)
}

func testDeleteProxy(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "del", in("10.0.0.1", 1), in("10.0.0.2", 2), in("10.0.0.3", 3), in("10.0.0.4", 4))
	busy, idle, lapsed, kept := px[0].ID, px[1].ID, px[2].ID, px[3].ID

	g1 := e.grant(a, busy, c, time.Minute)
	g2 := e.grant(b, busy, c, time.Minute)
	done := e.grant(a, busy, c, time.Minute)
	_, _, err := a.Release(e.ctx, done.Lease.ID, nil)
	require.NoError(t, err)
	e.grant(a, kept, c, time.Hour)
	e.leaderChange()

	for _, s := range []worker{a, b} {
		_, err = s.DeleteProxy(e.ctx, busy, false)
		require.ErrorIs(t, err, model.ErrConflict)
	}
	require.Equal(t, 2, e.proxy(a, busy).CurrentLeases, "a refused delete changes nothing")
	require.Equal(t, model.LeaseActive, e.lease(a, g1.Lease.ID).Status)

	released, err := b.DeleteProxy(e.ctx, idle, false)
	require.NoError(t, err)
	require.Empty(t, released)

	// Only expired leases: nothing live, so no force needed.
	short := e.grant(a, lapsed, c, time.Second)
	e.clock.Advance(2 * time.Second)
	released, err = a.DeleteProxy(e.ctx, lapsed, false)
	require.NoError(t, err)
	require.Empty(t, released)
	require.Equal(t, model.LeaseExpired, e.lease(b, short.Lease.ID).Status)

	released, err = b.DeleteProxy(e.ctx, busy, true)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{g1.Lease.ID, g2.Lease.ID}, leaseIDs(released))
	for _, l := range released {
		require.Equal(t, model.LeaseReleased, l.Status)
		require.True(t, l.ReleasedAt.Equal(e.clock.Now()))
		got := e.lease(a, l.ID)
		require.Equal(t, model.LeaseReleased, got.Status)
		require.True(t, got.ReleasedAt.Equal(*l.ReleasedAt))
	}
	// Releasing a lease of a deleted proxy is not a second release.
	l, changed, err := a.Release(e.ctx, g1.Lease.ID, nil)
	require.NoError(t, err)
	require.False(t, changed)
	require.Equal(t, model.LeaseReleased, l.Status)

	for _, s := range []worker{a, b} {
		for _, id := range []string{busy, idle, lapsed} {
			_, err = s.GetProxy(e.ctx, id)
			require.ErrorIs(t, err, model.ErrProxyNotFound)
			_, err = s.DeleteProxy(e.ctx, id, true)
			require.ErrorIs(t, err, model.ErrProxyNotFound)
		}
		require.NoError(t, s.SyncProxies(e.ctx))
		require.Equal(t, []string{kept}, candidates(s, "del", anyProxy))
		_, err = acquire(e.ctx, s, busy, c, time.Minute, nil)
		require.ErrorIs(t, err, errNotEligible)
	}
	require.Equal(t, 1, e.proxy(b, kept).CurrentLeases, "other proxies untouched")
}

func testMutateContention(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	a, b := e.open(), e.open()
	c, px := e.seed(a, "hot", in("10.0.0.1", 1000))
	p := px[0]
	g := e.grant(a, p.ID, c, time.Hour)

	const writers, increments = 8, 50
	var wg sync.WaitGroup
	errs := make([]error, writers)
	goOnBoth(&wg, writers, a, b, func(s worker, w int) {
		for i := 0; i < increments; i++ {
			_, err := s.mutateProxy(e.ctx, p.ID, func(rec *record.Proxy, _ time.Time) ([]outbox.Event, error) {
				rec.Port++
				return nil, nil
			})
			if err != nil {
				errs[w] = err
				return
			}
		}
	})
	e.leaderChange() // while the writers write
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	for _, s := range []worker{a, b} {
		got := e.proxy(s, p.ID)
		require.Equal(t, 1000+writers*increments, got.Port, "no lost update")
		require.Equal(t, 1, got.CurrentLeases, "the holder survives every write")
	}
	require.Equal(t, model.LeaseActive, e.lease(b, g.Lease.ID).Status)

	// A mutation that fails writes nothing.
	boom := errors.New("boom")
	m, err := b.mutateProxy(e.ctx, p.ID, func(rec *record.Proxy, _ time.Time) ([]outbox.Event, error) {
		rec.Port = 1
		return nil, boom
	})
	require.ErrorIs(t, err, boom)
	require.False(t, m.written)
	require.Equal(t, 1000+writers*increments, e.proxy(a, p.ID).Port)
	_, err = a.mutateProxy(e.ctx, uuid.NewString(), func(*record.Proxy, time.Time) ([]outbox.Event, error) { return nil, nil })
	require.ErrorIs(t, err, model.ErrProxyNotFound)
}

// An active lease lives only as a holder; its record is written by the write
// that removed the holder, right after it. A read that lands in between
// waits for the record; a worker that died in between leaves reads that
// tell the ending from the last holder for a short window, then 404 — and
// never a slot held.
func testEndingRecordLate(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	// A short window, so that the test sees it pass.
	a, b := e.open(WithEndedWindow(2*time.Second)), e.open(WithEndedWindow(2*time.Second))
	c, px := e.seed(a, "late", withMax(in("10.0.0.1", 1), 1))
	p := px[0].ID
	js, err := jetstream.New(e.connect())
	require.NoError(t, err)
	leases, err := js.KeyValue(e.ctx, kvstore.LeasesBucket)
	require.NoError(t, err)
	// dropHolder removes every holder as a release would, without the
	// ending record: a worker that died between its two writes.
	dropHolder := func() {
		_, err := a.mutateProxy(e.ctx, p, func(rec *record.Proxy, _ time.Time) ([]outbox.Event, error) {
			rec.Holders = rec.Holders[:0]
			return nil, nil
		})
		require.NoError(t, err)
	}

	// The record comes late: reads wait for it and return it.
	g := e.grant(a, p, c, time.Minute)
	e.leaderChange()
	require.Equal(t, model.LeaseActive, e.lease(b, g.Lease.ID).Status, "b's replica has seen the holder")
	dropHolder()
	ended := g.Lease
	ended.Status = model.LeaseReleased
	at := e.clock.Now().UTC()
	ended.ReleasedAt = &at
	// The record is written once a read has looked for it and missed.
	lateWrite := func(l model.Lease) {
		missed := make(chan struct{}, 64)
		b.endingMissed = func(id string) {
			if id == l.ID {
				missed <- struct{}{}
			}
		}
		go func() {
			<-missed
			data, _ := json.Marshal(l)
			_, _ = leases.Put(context.Background(), l.ID, data)
		}()
	}
	lateWrite(ended)
	got := e.lease(b, g.Lease.ID)
	require.Equal(t, ended.Status, got.Status)
	require.Equal(t, ended.FencingToken, got.FencingToken)
	require.True(t, at.Equal(*got.ReleasedAt), "released_at from the record")

	// A replica can skip revisions (a refresh after a lost race, the watch
	// behind it): a lease that began and ended between two it installed is
	// one it never saw. Its record, written late, is still found.
	unseen := ended
	unseen.ID = uuid.NewString()
	lateWrite(unseen)
	require.Equal(t, unseen.ID, e.lease(b, unseen.ID).ID)
	b.endingMissed = nil

	// The record never comes: told from the last holder, then unknown.
	g = e.grant(b, p, c, time.Minute)
	require.Equal(t, model.LeaseActive, e.lease(b, g.Lease.ID).Status)
	dropHolder()
	began := time.Now()
	got = e.lease(b, g.Lease.ID)
	require.Equal(t, model.LeaseReleased, got.Status)
	require.Equal(t, g.Lease.FencingToken, got.FencingToken)
	require.GreaterOrEqual(t, time.Since(began), 150*time.Millisecond, "waited for the record first")
	rel, changed, err := b.Release(e.ctx, g.Lease.ID, nil)
	require.NoError(t, err)
	require.False(t, changed, "nothing left to release")
	require.Equal(t, model.LeaseReleased, rel.Status)
	require.Eventually(t, func() bool {
		_, err := b.GetLease(e.ctx, g.Lease.ID)
		return errors.Is(err, model.ErrLeaseNotFound)
	}, 5*time.Second, 100*time.Millisecond, "a lease with no record is unknown once the window has passed")
	require.Equal(t, 0, e.proxy(a, p).CurrentLeases, "the slot is free throughout")
	e.grant(a, p, c, time.Minute)
}
