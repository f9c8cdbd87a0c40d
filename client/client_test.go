package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

func TestLeasingRoundTrip(t *testing.T) {
	t.Parallel()
	e, ctx, proxies := newPoolEnv(t, "scrapers", 2, 1)

	lease, proxy, err := e.c.Acquire(ctx, model.AcquireRequest{
		PoolName: "scrapers", ConsumerName: ptr("crawler-1"), DurationSeconds: ptr(60),
		Filters: &model.ProxyFilters{Country: ptr("BR")},
		// The worker does not wait or deduplicate yet; the fields are sent
		// and accepted.
		WaitSeconds: ptr(0.5), RequestID: ptr("job-1"),
	})
	require.NoError(t, err)
	require.NotNil(t, lease)
	require.Equal(t, proxies[1].ID, proxy.ID)
	require.Equal(t, "http://10.0.0.1:3001", proxy.URL)
	require.Equal(t, model.LeaseActive, lease.Status)
	require.Equal(t, "crawler-1", lease.ConsumerName)
	require.InDelta(t, 60, lease.ExpiresAt.Sub(lease.AcquiredAt).Seconds(), 0.01)

	got, err := e.c.Lease(ctx, lease.ID)
	require.NoError(t, err)
	require.Equal(t, lease.ID, got.ID)
	require.Equal(t, model.LeaseActive, got.Status)

	st, err := e.c.Stats(ctx, "scrapers")
	require.NoError(t, err)
	require.Equal(t, 2, st.TotalProxies)
	require.Equal(t, 1, st.TotalLeases)
	require.Equal(t, 1, st.AvailableProxies)

	renewed, err := e.c.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: ptr(120), ConsumerName: ptr("crawler-1")})
	require.NoError(t, err)
	require.True(t, renewed.ExpiresAt.After(lease.ExpiresAt))
	require.Equal(t, lease.FencingToken, renewed.FencingToken)

	released, err := e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: ptr("crawler-1")})
	require.NoError(t, err)
	require.Equal(t, model.LeaseReleased, released.Status)
	require.NotNil(t, released.ReleasedAt)

	again, err := e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	require.NoError(t, err, "releasing twice is not an error")
	require.Equal(t, released.ReleasedAt, again.ReleasedAt)

	n, err := e.c.Cleanup(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, n)
}

func TestAcquireNoneFreeIsNil(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "one", 1, 1)
	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "one"})
	require.NoError(t, err)
	require.NotNil(t, lease)

	l2, p2, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "one"})
	require.NoError(t, err)
	require.Nil(t, l2)
	require.Nil(t, p2)

	// A filter that matches nothing is also "none free", not an error.
	l3, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "one", Filters: &model.ProxyFilters{Country: ptr("ZZ")}})
	require.NoError(t, err)
	require.Nil(t, l3)
}

func TestCleanupExpires(t *testing.T) {
	t.Parallel()
	clock := workertest.NewClock()
	e, ctx, _ := newPoolEnvWith(t, workertest.Config{Clock: clock.Now}, "short", 1, 1)
	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "short", DurationSeconds: ptr(1)})
	require.NoError(t, err)
	clock.Advance(1100 * time.Millisecond)
	n, err := e.c.Cleanup(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got, err := e.c.Lease(ctx, lease.ID)
	require.NoError(t, err)
	require.Equal(t, model.LeaseExpired, got.Status)
}

// TestErrorSentinels triggers every contract error the worker produces and
// checks the *Error, its status and code, and errors.Is against both the
// model sentinels and the client aliases.
func TestErrorSentinels(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "errs", 1, 1)
	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "errs", ConsumerName: ptr("owner")})
	require.NoError(t, err)
	done, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "errs"})
	require.NoError(t, err)
	require.Nil(t, done)
	_, err = e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	require.NoError(t, err)
	missing := uuid.NewString()

	cases := []struct {
		name     string
		call     func() error
		sentinel error
		alias    error
		status   int
		code     string
		message  string
	}{
		{"bad request: unknown selector", func() error {
			_, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "errs", Selector: ptr(model.Selector("fastest"))})
			return err
		}, model.ErrBadRequest, client.ErrBadRequest, 400, "bad_request", "fastest"},
		{"bad request: invalid pool name", func() error {
			_, err := e.c.Stats(ctx, "no spaces")
			return err
		}, model.ErrBadRequest, client.ErrBadRequest, 400, "bad_request", "pool_name"},
		{"forbidden: another consumer's lease", func() error {
			_, err := e.c.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: ptr(10), ConsumerName: ptr("thief")})
			return err
		}, model.ErrForbidden, client.ErrForbidden, 403, "forbidden", "thief"},
		{"pool not found", func() error {
			_, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "latam"})
			return err
		}, model.ErrPoolNotFound, client.ErrPoolNotFound, 404, "pool_not_found", `"latam"`},
		{"lease not found", func() error {
			_, err := e.c.Lease(ctx, missing)
			return err
		}, model.ErrLeaseNotFound, client.ErrLeaseNotFound, 404, "lease_not_found", missing},
		{"proxy not found", func() error {
			_, err := e.c.GetProxy(ctx, missing)
			return err
		}, model.ErrProxyNotFound, client.ErrProxyNotFound, 404, "proxy_not_found", missing},
		{"conflict: duplicate pool", func() error {
			_, err := e.c.CreatePool(ctx, model.PoolCreateRequest{Name: "errs"})
			return err
		}, model.ErrConflict, client.ErrConflict, 409, "conflict", "errs"},
		{"lease not active: renew a released lease", func() error {
			_, err := e.c.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: ptr(10)})
			return err
		}, model.ErrLeaseNotActive, client.ErrLeaseNotActive, 409, "lease_not_active", lease.ID},
		{"payload too large", func() error {
			_, err := e.c.CreatePool(ctx, model.PoolCreateRequest{Name: "big", Description: ptr(strings.Repeat("x", 70<<10))})
			return err
		}, model.ErrPayloadTooLarge, client.ErrPayloadTooLarge, 413, "payload_too_large", "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			require.ErrorIs(t, err, tc.sentinel)
			require.ErrorIs(t, err, tc.alias)
			var ce *client.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.status, ce.Status)
			require.Equal(t, tc.code, ce.Code)
			require.Contains(t, ce.Message, tc.message)
			require.Contains(t, err.Error(), ce.Message, "Error() carries the server's message")
			require.True(t, strings.HasPrefix(ce.Subject, "pharox."), ce.Subject)
			require.ErrorIs(t, err, &client.Error{Code: tc.code})
			for _, other := range []error{model.ErrBadRequest, model.ErrForbidden, model.ErrPoolNotFound, model.ErrLeaseNotFound,
				model.ErrProxyNotFound, model.ErrConflict, model.ErrLeaseNotActive, model.ErrPayloadTooLarge, model.ErrUnavailable} {
				if other != tc.sentinel {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

func TestNoRespondersIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)

	// A broker without health checks answers 503 unavailable, and, before
	// the endpoint existed, nothing at all (no responders): ErrUnavailable
	// both.
	bare, err := broker.Start(e.nc, e.w.Manager, broker.WithPrefix("nohealth"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = bare.Stop(context.Background()) })
	require.NoError(t, e.nc.Flush())
	_, err = client.New(e.nc, client.WithPrefix("nohealth")).HealthCheck(ctx, model.HealthCheckRequest{PoolName: ptr("any")})
	require.ErrorIs(t, err, model.ErrUnavailable)
	var refused *client.Error
	require.ErrorAs(t, err, &refused)
	require.Equal(t, 503, refused.Status)

	other := client.New(e.nc, client.WithPrefix("elsewhere"), client.WithTimeout(time.Second))
	require.Equal(t, "elsewhere.acquire", other.Subject("acquire"))
	_, _, err = other.Acquire(ctx, model.AcquireRequest{PoolName: "p"})
	require.ErrorIs(t, err, client.ErrUnavailable)
	require.ErrorIs(t, err, nats.ErrNoResponders)
	require.Contains(t, err.Error(), "elsewhere.acquire")
	var ce *client.Error
	require.False(t, errors.As(err, &ce), "no reply, so no *Error")
}

// TestHealthCheckWire checks what HealthCheck sends and decodes, against a
// stand-in responder (the test worker runs no prober).
func TestHealthCheckWire(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gotCh := make(chan []byte, 1)
	sub, err := e.nc.Subscribe("hc.admin.health.check", func(m *nats.Msg) {
		gotCh <- append([]byte(nil), m.Data...)
		_ = m.Respond([]byte(`{"results":[{"proxy_id":"p1","status":"slow","latency_ms":2500,"protocol":"http","attempts":1,"status_code":200,"checked_at":"2026-01-02T03:04:05Z","error_message":null}]}`))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	c := client.New(e.nc, client.WithPrefix("hc"))
	res, err := c.HealthCheck(ctxT(t), model.HealthCheckRequest{PoolName: ptr("scrapers"), Limit: ptr(10),
		Options: &model.HealthCheckOptions{TargetURL: "https://example.com", Timeout: 2, Attempts: 1, ExpectedStatusCodes: []int{200}}})
	require.NoError(t, err)
	got := <-gotCh
	require.JSONEq(t, `{"pool_name":"scrapers","limit":10,"options":{"target_url":"https://example.com","timeout":2,"attempts":1,"expected_status_codes":[200],"slow_threshold_ms":0,"allow_redirects":false,"headers":null}}`, string(got))
	require.Len(t, res, 1)
	require.Equal(t, model.ProxySlow, res[0].Status)
	require.Equal(t, 200, *res[0].StatusCode)
}

func TestPrefixMovesEverySubject(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnvWith(t, workertest.Config{Prefix: "px"}, "moved", 1, 0, client.WithPrefix("px"))
	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "moved"})
	require.NoError(t, err)
	require.NotNil(t, lease)
	// A default-prefix client finds no worker.
	_, err = client.New(e.nc).ListPools(ctx)
	require.ErrorIs(t, err, model.ErrUnavailable)
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)

	pool, err := e.c.CreatePool(ctx, model.PoolCreateRequest{Name: "adm", Description: ptr("first")})
	require.NoError(t, err)
	require.Equal(t, "adm", pool.Name)
	require.Equal(t, "first", *pool.Description)

	hc := model.HealthCheck{Enabled: true, IntervalSeconds: 60, FailureThreshold: 3,
		Options: &model.HealthCheckOptions{TargetURL: "https://example.com", Timeout: 5, Attempts: 1, ExpectedStatusCodes: []int{200}, SlowThresholdMs: 2000, AllowRedirects: true, Headers: map[string]string{}}}
	updated, err := e.c.UpdatePool(ctx, model.PoolUpdateRequest{Name: "adm", Description: model.Some("second"), HealthCheck: model.Some(hc)})
	require.NoError(t, err)
	require.Equal(t, "second", *updated.Description)
	require.NotNil(t, updated.HealthCheck)
	require.Equal(t, "https://example.com", updated.HealthCheck.Options.TargetURL)

	_, err = e.c.CreatePool(ctx, model.PoolCreateRequest{Name: "adm2"})
	require.NoError(t, err)
	pools, err := e.c.ListPools(ctx)
	require.NoError(t, err)
	names := []string{}
	for _, p := range pools {
		names = append(names, p.Name)
	}
	require.ElementsMatch(t, []string{"adm", "adm2"}, names)

	in := make([]model.ProxyInput, 5)
	for i := range in {
		in[i] = model.ProxyInput{Host: "192.0.2.1", Port: 8000 + i, Country: ptr("AR"),
			Credentials: &model.Credentials{User: "u", Password: "p@ss"}}
	}
	in[4].Protocol = ptr(model.ProtocolSOCKS5)
	added, err := e.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "adm", Proxies: in})
	require.NoError(t, err)
	require.Len(t, added, 5)
	require.Equal(t, "socks5://u:p%40ss@192.0.2.1:8004", added[4].URL)

	page, err := e.c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "adm", Limit: ptr(2)})
	require.NoError(t, err)
	require.Len(t, page.Proxies, 2)
	require.NotNil(t, page.NextCursor)
	var all []string
	for p, err := range e.c.AllProxies(ctx, model.ProxiesListRequest{PoolName: "adm", Limit: ptr(2)}) {
		require.NoError(t, err)
		all = append(all, p.ID)
	}
	require.Len(t, all, 5)
	for i := range added {
		require.Equal(t, added[i].ID, all[i], "added order")
	}

	got, err := e.c.GetProxy(ctx, added[0].ID)
	require.NoError(t, err)
	require.Equal(t, 8000, got.Port)

	up, err := e.c.UpdateProxy(ctx, model.ProxyUpdateRequest{ProxyID: added[0].ID, Status: model.Some(model.ProxyBanned),
		Country: model.Null[string](), MaxConcurrency: model.Some(2)})
	require.NoError(t, err)
	require.Equal(t, model.ProxyBanned, up.Status)
	require.Nil(t, up.Country)
	require.Equal(t, 2, *up.MaxConcurrency)

	banned, err := e.c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "adm", Status: ptr(model.ProxyBanned)})
	require.NoError(t, err)
	require.Len(t, banned.Proxies, 1)

	applied, err := e.c.ApplyHealth(ctx, model.HealthApplyRequest{ProxyID: added[1].ID, Status: model.ProxySlow, LatencyMs: 2500, Protocol: model.ProtocolHTTP})
	require.NoError(t, err)
	require.Equal(t, model.ProxySlow, applied.Status)
	require.NotNil(t, applied.CheckedAt)

	// A proxy with a lease: delete refuses without force.
	lease, proxy, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "adm"})
	require.NoError(t, err)
	require.NotNil(t, lease)
	err = e.c.DeleteProxy(ctx, model.ProxyDeleteRequest{ProxyID: proxy.ID})
	require.ErrorIs(t, err, model.ErrConflict)
	require.NoError(t, e.c.DeleteProxy(ctx, model.ProxyDeleteRequest{ProxyID: proxy.ID, Force: true}))
	_, err = e.c.GetProxy(ctx, proxy.ID)
	require.ErrorIs(t, err, model.ErrProxyNotFound)
	l, err := e.c.Lease(ctx, lease.ID)
	require.NoError(t, err)
	require.Equal(t, model.LeaseReleased, l.Status)

	c1, err := e.c.EnsureConsumer(ctx, "bot-1")
	require.NoError(t, err)
	c2, err := e.c.EnsureConsumer(ctx, "bot-1")
	require.NoError(t, err)
	require.Equal(t, c1.ID, c2.ID)
	consumers, err := e.c.ListConsumers(ctx)
	require.NoError(t, err)
	var cnames []string
	for _, c := range consumers {
		cnames = append(cnames, c.Name)
	}
	require.Contains(t, cnames, "bot-1")
	require.Contains(t, cnames, "default", "registered by the acquire")

	lease2, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "adm"})
	require.NoError(t, err)
	require.NotNil(t, lease2)
	require.ErrorIs(t, e.c.DeletePool(ctx, model.PoolDeleteRequest{Name: "adm"}), model.ErrConflict)
	require.NoError(t, e.c.DeletePool(ctx, model.PoolDeleteRequest{Name: "adm", Force: true}))
	_, err = e.c.Stats(ctx, "adm")
	require.ErrorIs(t, err, model.ErrPoolNotFound)
	require.NoError(t, e.c.DeletePool(ctx, model.PoolDeleteRequest{Name: "adm2"}))
}

func TestTimeoutIsNotUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A responder that never answers: the request times out, which says
	// nothing about whether the worker acted, so it is not ErrUnavailable.
	sub, err := e.nc.Subscribe("slow.stats", func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	c := client.New(e.nc, client.WithPrefix("slow"), client.WithTimeout(200*time.Millisecond))
	start := time.Now()
	_, err = c.Stats(ctxT(t), "p")
	require.Error(t, err)
	require.Less(t, time.Since(start), 2*time.Second)
	require.False(t, errors.Is(err, model.ErrUnavailable), "%v", err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
