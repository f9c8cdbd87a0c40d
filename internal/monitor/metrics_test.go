package monitor_test

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/testclock"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// TestMetricsAfterAKnownSequence runs a real worker on an embedded server,
// makes 3 grants, 1 acquire that finds nothing free, 1 acquire of a pool
// that does not exist, 2 releases (one a failure that starts a cooldown)
// and 1 expiry, and scrapes /metrics over HTTP: the exact counters, the
// pool gauges against pharox.stats (the cooling gauge once while the
// cooldown runs, once after), and the request histogram against
// $SRV.STATS.
func TestMetricsAfterAKnownSequence(t *testing.T) {
	clock := testclock.New()
	nc, _, base := startMonitored(t, worker.Config{Clock: clock.Now})
	ctx := t.Context()

	c := client.New(nc, client.WithTimeout(timeout))
	_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "metrics", Cooldown: &model.Cooldown{Failures: 1, Seconds: 5, MaxSeconds: 5}})
	require.NoError(t, err)
	one := 1
	var proxies []model.ProxyInput
	for i := range 3 {
		proxies = append(proxies, model.ProxyInput{Host: "127.0.0.1", Port: 3128 + i, MaxConcurrency: &one})
	}
	_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "metrics", Proxies: proxies})
	require.NoError(t, err)

	var leases []*model.Lease
	for _, seconds := range []int{60, 60, 5} {
		lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "metrics", DurationSeconds: &seconds})
		require.NoError(t, err)
		require.NotNil(t, lease)
		leases = append(leases, lease)
	}
	lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "metrics"})
	require.NoError(t, err)
	require.Nil(t, lease, "every proxy is leased")
	_, _, err = c.Acquire(ctx, model.AcquireRequest{PoolName: "no-such-pool"})
	require.ErrorIs(t, err, client.ErrPoolNotFound)
	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: leases[0].ID})
	require.NoError(t, err)
	// A failure with a one-failure cooldown: one cooldown, over by the
	// time the clock is moved on below.
	_, err = c.Release(ctx, model.ReleaseFailure(leases[1].ID, "connect timeout"))
	require.NoError(t, err)
	// While it cools (the test clock stands still), the cooling gauge says
	// what pharox.stats says: one proxy.
	cooling, err := c.Stats(ctx, "metrics")
	require.NoError(t, err)
	require.Equal(t, 1, cooling.CoolingProxies, "the failed proxy cools")
	got, ok := value(scrape(t, base), "pharox_pool_cooling_proxies", map[string]string{"pool": "metrics"})
	require.True(t, ok, "no series pharox_pool_cooling_proxies{pool=metrics}")
	require.Equal(t, float64(cooling.CoolingProxies), got, "pharox_pool_cooling_proxies while cooling")
	// Releasing again ends nothing and is counted nowhere.
	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: leases[0].ID})
	require.NoError(t, err)
	clock.Advance(10 * time.Second) // past the 5 s lease and the expiry grace
	n, err := c.Cleanup(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	stats, err := c.Stats(ctx, "metrics")
	require.NoError(t, err)

	m := scrape(t, base)
	counters := []struct {
		family string
		labels map[string]string
		want   float64
	}{
		{"pharox_acquire_total", map[string]string{"pool": "metrics", "outcome": "granted"}, 3},
		{"pharox_acquire_total", map[string]string{"pool": "metrics", "outcome": "none_free"}, 1},
		{"pharox_acquire_total", map[string]string{"pool": "", "outcome": "error"}, 1},
		{"pharox_release_total", map[string]string{"pool": "metrics", "outcome": "released"}, 2},
		{"pharox_expired_total", map[string]string{"pool": "metrics"}, 1},
		{"pharox_cooldowns_total", map[string]string{"pool": "metrics"}, 1},
		{"pharox_cas_conflicts_total", nil, 0},
		{"pharox_waiters", nil, 0},
		{"pharox_event_publish_failures_total", nil, 0},
		{"pharox_replica_lag_seconds", nil, 0},
		// The pool gauges, as pharox.stats says.
		{"pharox_pool_proxies", map[string]string{"pool": "metrics", "status": "active"}, float64(stats.ActiveProxies)},
		{"pharox_pool_available_proxies", map[string]string{"pool": "metrics"}, float64(stats.AvailableProxies)},
		{"pharox_pool_leased_proxies", map[string]string{"pool": "metrics"}, float64(stats.LeasedProxies)},
		{"pharox_pool_active_leases", map[string]string{"pool": "metrics"}, float64(stats.TotalLeases)},
		{"pharox_pool_cooling_proxies", map[string]string{"pool": "metrics"}, float64(stats.CoolingProxies)},
	}
	for _, tc := range counters {
		got, ok := value(m, tc.family, tc.labels)
		require.True(t, ok, "no series %s%v", tc.family, tc.labels)
		require.Equal(t, tc.want, got, "%s%v", tc.family, tc.labels)
	}
	require.Equal(t, 3, stats.AvailableProxies, "the stats themselves: every proxy free again")
	require.Equal(t, 0, stats.TotalLeases)
	require.Equal(t, 0, stats.CoolingProxies, "the cooldown is over")
	require.Len(t, series(m, "pharox_acquire_total", nil), 3, "no other acquire series")
	require.Len(t, series(m, "pharox_release_total", nil), 1, "the second release of a lease counts nowhere")
	total := 0.0
	for _, s := range series(m, "pharox_pool_proxies", map[string]string{"pool": "metrics"}) {
		total += s.Gauge.GetValue()
	}
	require.Equal(t, float64(stats.TotalProxies), total, "proxies by status add up to total_proxies")
	for name, f := range m {
		for _, s := range f.Metric {
			require.NotEqual(t, "no-such-pool", label(s, "pool"), "%s: a made-up pool name became a label", name)
		}
	}

	// The histogram: 4 acquires answered ok (3 grants, 1 none free), 1
	// pool_not_found; and for every endpoint, exactly what $SRV.STATS says.
	hist := func(labels map[string]string) (count uint64, sum float64) {
		for _, s := range series(m, "pharox_request_duration_seconds", labels) {
			count += s.Histogram.GetSampleCount()
			sum += s.Histogram.GetSampleSum()
		}
		return count, sum
	}
	count, _ := hist(map[string]string{"operation": "acquire", "code": "ok"})
	require.EqualValues(t, 4, count)
	count, _ = hist(map[string]string{"operation": "acquire", "code": "pool_not_found"})
	require.EqualValues(t, 1, count)
	st := srvStats(t, nc)
	for _, ep := range st.Endpoints {
		op := strings.TrimPrefix(ep.Subject, "pharox.")
		count, sum := hist(map[string]string{"operation": op})
		okCount, _ := hist(map[string]string{"operation": op, "code": "ok"})
		require.EqualValues(t, ep.NumRequests, count, "%s: requests", op)
		require.EqualValues(t, ep.NumErrors, count-okCount, "%s: errors", op)
		require.InDelta(t, ep.ProcessingTime.Seconds(), sum, 1e-6*math.Max(1, float64(count)), "%s: processing time", op)
	}
}

// TestProbes checks /healthz and /readyz through a worker's life: not
// ready before its replica is loaded, ready once it serves, not ready when
// a stream it needs is gone, nor while it drains; alive throughout.
func TestProbes(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	mon := monitor.New()
	base := listen(t, mon)

	requireProbe := func(path string, want int, text string) {
		t.Helper()
		code, body := get(t, base+path)
		require.Equal(t, want, code, body)
		require.Contains(t, body, text)
	}
	requireProbe("/healthz", http.StatusOK, "ok")
	requireProbe("/readyz", http.StatusServiceUnavailable, "starting: the replica is not loaded yet")
	_, body := get(t, base+"/metrics")
	require.NotContains(t, body, "pharox_pool_", "no pool gauges before the worker runs")

	w, err := worker.Start(t.Context(), worker.Config{Conn: nc, Monitor: mon})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(t.Context()) })
	requireProbe("/readyz", http.StatusOK, "ready")
	requireProbe("/healthz", http.StatusOK, "ok")

	// A stream the worker needs is deleted behind its back.
	js, err := nc.JetStream()
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream("KV_PHAROX_HEALTH_CLAIMS"))
	requireProbe("/readyz", http.StatusServiceUnavailable, "stream KV_PHAROX_HEALTH_CLAIMS not reachable")

	mon.Drain()
	requireProbe("/readyz", http.StatusServiceUnavailable, "draining")
	requireProbe("/healthz", http.StatusOK, "ok")
}
