package health_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/schemas"
)

// healthWorker is a worker assembled as cmd/worker does, with a health
// checker behind admin.health.check.
type healthWorker struct {
	mgr     *manager.Manager
	checker *health.Checker
	pub     *events.Publisher
}

func startHealthWorker(t *testing.T, nc *nats.Conn, hopts ...health.Option) *healthWorker {
	t.Helper()
	ctx := context.Background()
	store, err := kvstore.Open(ctx, nc)
	require.NoError(t, err)
	pub, err := events.New(ctx, nc, events.WithEndings(store.PutEnding))
	require.NoError(t, err)
	mgr, err := manager.New(ctx, store, manager.WithLogger(zap.NewNop()), manager.WithOutbox(pub))
	require.NoError(t, err)
	hc, err := health.New(ctx, nc, mgr, hopts...)
	require.NoError(t, err)
	brk, err := broker.Start(nc, mgr, broker.WithHealthChecker(hc))
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = brk.Stop(sctx)
		hc.Close()
		_ = pub.Close(sctx)
		mgr.Close()
	})
	return &healthWorker{mgr: mgr, checker: hc, pub: pub}
}

// healthEvents collects pharox.events.health.
type healthEvents struct {
	mu  sync.Mutex
	evs []model.HealthEvent
}

func subscribeHealth(t *testing.T, nc *nats.Conn) *healthEvents {
	t.Helper()
	he := &healthEvents{}
	sub, err := nc.Subscribe("pharox.events."+model.EventHealth, func(m *nats.Msg) {
		var ev model.HealthEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			panic(err)
		}
		he.mu.Lock()
		he.evs = append(he.evs, ev)
		he.mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return he
}

func (h *healthEvents) byProxy() map[string][]model.HealthEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string][]model.HealthEvent{}
	for _, ev := range h.evs {
		out[ev.ProxyID] = append(out[ev.ProxyID], ev)
	}
	return out
}

type errReply struct {
	Error model.ErrorDetail `json:"error"`
}

// call sends a request and returns the header code ("" for success) and body.
func call(t *testing.T, nc *nats.Conn, subject string, body any) (string, []byte) {
	t.Helper()
	data, err := json.Marshal(body)
	require.NoError(t, err)
	msg, err := nc.Request(subject, data, 30*time.Second)
	require.NoError(t, err)
	return msg.Header.Get("Nats-Service-Error-Code"), msg.Data
}

func TestHealthCheckEndpoint(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	w := startHealthWorker(t, nc, health.WithConcurrency(4))
	evs := subscribeHealth(t, nc)
	sch, err := schemas.Load()
	require.NoError(t, err)
	tg := startTargets(t)
	fwd := proxytest.HTTP(t, proxytest.HTTPConfig{})
	ctx := context.Background()

	_, err = w.mgr.CreatePool(ctx, model.PoolCreateRequest{Name: "hc"})
	require.NoError(t, err)
	target := tg.http.URL + "/ok"
	pool, err := w.mgr.UpdatePool(ctx, model.PoolUpdateRequest{Name: "hc", HealthCheck: model.Some(model.HealthCheck{
		Enabled: false, IntervalSeconds: 60, FailureThreshold: 2,
		Options: &model.HealthCheckOptions{TargetURL: target, Timeout: 2, Attempts: 1, ExpectedStatusCodes: []int{200},
			SlowThresholdMs: 2000, AllowRedirects: true, Headers: map[string]string{}},
	})})
	require.NoError(t, err)
	require.NotNil(t, pool.HealthCheck)
	banned := model.ProxyBanned
	socks := model.ProtocolSOCKS5
	added, err := w.mgr.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "hc", Proxies: []model.ProxyInput{
		{Host: "127.0.0.1", Port: fwd.Port},
		{Host: "127.0.0.1", Port: natstest.FreePort(t)},
		{Host: "127.0.0.1", Port: natstest.FreePort(t), Status: &banned},
		{Host: "127.0.0.1", Port: proxytest.SOCKS5(t, "u", "p").Port, Protocol: &socks, Credentials: creds("u", "p")},
	}})
	require.NoError(t, err)
	good, bad, ban, sock := added[0], added[1], added[2], added[3]

	check := func(body any) model.HealthCheckReply {
		t.Helper()
		code, data := call(t, nc, "pharox.admin.health.check", body)
		require.Empty(t, code, "error reply: %s", data)
		require.NoError(t, sch.Validate("health_check.reply", data))
		var rep model.HealthCheckReply
		require.NoError(t, json.Unmarshal(data, &rep))
		return rep
	}
	refuse := func(body any, wantCode, wantErr, wantMsg string) {
		t.Helper()
		code, data := call(t, nc, "pharox.admin.health.check", body)
		require.Equal(t, wantCode, code, "reply: %s", data)
		var er errReply
		require.NoError(t, json.Unmarshal(data, &er))
		require.Equal(t, wantErr, er.Error.Code)
		require.Contains(t, er.Error.Message, wantMsg)
	}
	status := func(id string) model.ProxyStatus {
		t.Helper()
		px, err := w.mgr.GetProxy(ctx, id)
		require.NoError(t, err)
		return px.Status
	}

	// One proxy, the pool's options.
	rep := check(map[string]any{"proxy_id": good.ID})
	require.Len(t, rep.Results, 1)
	require.Equal(t, model.ProxyActive, rep.Results[0].Status)
	require.Equal(t, good.ID, rep.Results[0].ProxyID)
	px, err := w.mgr.GetProxy(ctx, good.ID)
	require.NoError(t, err)
	require.NotNil(t, px.CheckedAt, "applied: checked_at set")
	require.EqualValues(t, 1, fwd.Forwards.Load())
	// Recorded as the proxy's last health result (v1.1), in the same write.
	require.NotNil(t, px.LatencyMs)
	require.Equal(t, rep.Results[0].LatencyMs, *px.LatencyMs)
	code, data := call(t, nc, "pharox.admin.health.last", map[string]any{"proxy_id": good.ID})
	require.Empty(t, code, "error reply: %s", data)
	require.NoError(t, sch.Validate("health_last.reply", data))
	var last model.HealthLastReply
	require.NoError(t, json.Unmarshal(data, &last))
	require.NotNil(t, last.Result)
	require.Equal(t, rep.Results[0].LatencyMs, last.Result.LatencyMs)
	require.True(t, rep.Results[0].CheckedAt.Equal(last.Result.CheckedAt))
	require.Equal(t, rep.Results[0].Attempts, last.Result.Attempts)

	// A failing proxy: the result says inactive; the pool's threshold (2)
	// makes the proxy inactive on the second failed check only.
	rep = check(map[string]any{"proxy_id": bad.ID})
	require.Equal(t, model.ProxyInactive, rep.Results[0].Status)
	requireConnFailure(t, *rep.Results[0].ErrorMessage)
	lastBad, err := w.mgr.LastHealth(ctx, bad.ID)
	require.NoError(t, err)
	require.Equal(t, model.ProxyInactive, lastBad.Status, "the last result as probed, though the threshold keeps the proxy's status")
	requireConnFailure(t, *lastBad.ErrorMessage)
	require.Equal(t, model.ProxyActive, status(bad.ID))
	n, err := w.checker.Failures(ctx, bad.ID)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	check(map[string]any{"proxy_id": bad.ID})
	require.Equal(t, model.ProxyInactive, status(bad.ID))

	// Request options replace the pool's; the target defaults to the pool's.
	rep = check(map[string]any{"proxy_id": good.ID, "options": map[string]any{"target_url": tg.http.URL + "/status/500"}})
	require.Equal(t, model.ProxyInactive, rep.Results[0].Status)
	require.Equal(t, 500, *rep.Results[0].StatusCode)
	require.Equal(t, model.ProxyActive, status(good.ID), "one failure under threshold 2")
	rep = check(map[string]any{"proxy_id": good.ID, "options": map[string]any{"slow_threshold_ms": 0, "attempts": 2}})
	require.Equal(t, model.ProxySlow, rep.Results[0].Status)
	require.Equal(t, model.ProxySlow, status(good.ID), "a slow result is applied at once")
	n, err = w.checker.Failures(ctx, good.ID)
	require.NoError(t, err)
	require.Equal(t, 0, n, "a good check resets the failures")

	// The whole pool: every proxy probed, banned stays banned.
	rep = check(map[string]any{"pool_name": "hc"})
	require.Len(t, rep.Results, 4)
	got := map[string]model.ProxyStatus{}
	for _, r := range rep.Results {
		got[r.ProxyID] = r.Status
	}
	require.Equal(t, map[string]model.ProxyStatus{good.ID: model.ProxyActive, bad.ID: model.ProxyInactive,
		ban.ID: model.ProxyInactive, sock.ID: model.ProxyActive}, got)
	require.Equal(t, model.ProxyActive, status(good.ID))
	require.Equal(t, model.ProxyBanned, status(ban.ID))
	require.Equal(t, model.ProxyActive, status(sock.ID))
	check(map[string]any{"pool_name": "hc", "limit": 4})

	// Events: once per status change.
	require.NoError(t, w.pub.Flush(ctx))
	require.Eventually(t, func() bool {
		by := evs.byProxy()
		return len(by[bad.ID]) == 1 && len(by[good.ID]) == 2
	}, 5*time.Second, 20*time.Millisecond)
	by := evs.byProxy()
	require.Equal(t, model.ProxyActive, by[bad.ID][0].PreviousStatus)
	require.Equal(t, model.ProxyInactive, by[bad.ID][0].Result.Status)
	require.Equal(t, "hc", by[bad.ID][0].PoolName)
	require.Equal(t, model.ProxySlow, by[good.ID][0].Result.Status)
	require.Equal(t, model.ProxyActive, by[good.ID][1].Result.Status)
	require.Empty(t, by[ban.ID])
	require.Empty(t, by[sock.ID])

	// Bounds and errors.
	refuse(map[string]any{"pool_name": "hc", "limit": 3}, "400", "bad_request", `pool "hc" has 4 proxies, more than limit 3`)
	refuse(map[string]any{"pool_name": "hc", "limit": 1001}, "400", "bad_request", "limit must be in 1..1000")
	refuse(map[string]any{"pool_name": "hc", "limit": 0}, "400", "bad_request", "limit must be in 1..1000")
	refuse(map[string]any{}, "400", "bad_request", "proxy_id or pool_name is required")
	refuse(map[string]any{"pool_name": "hc", "proxy_id": good.ID}, "400", "bad_request", "not both")
	refuse(map[string]any{"proxy_id": good.ID, "limit": 5}, "400", "bad_request", "limit goes with pool_name")
	refuse(map[string]any{"proxy_id": good.ID, "options": map[string]any{"attempts": 9}}, "400", "bad_request", "attempts")
	refuse(map[string]any{"proxy_id": good.ID, "options": map[string]any{"target_url": "ftp://x"}}, "400", "bad_request", "target_url")
	refuse(map[string]any{"proxy_id": good.ID, "retries": 1}, "400", "bad_request", `"retries"`)
	refuse(map[string]any{"pool_name": "nope"}, "404", "pool_not_found", "nope")
	refuse(map[string]any{"proxy_id": "not-a-uuid"}, "404", "proxy_not_found", "not-a-uuid")
	refuse(map[string]any{"proxy_id": "0b7c6f0e-9d1a-4c3e-8f5a-2b1d3c4e5f60"}, "404", "proxy_not_found", "0b7c6f0e")
	refuse(map[string]any{"proxy_id": ""}, "400", "bad_request", "proxy_id")
	refuse(map[string]any{"pool_name": "a b"}, "400", "bad_request", "pool_name")

	// A pool without options needs a target in the request.
	_, err = w.mgr.CreatePool(ctx, model.PoolCreateRequest{Name: "bare"})
	require.NoError(t, err)
	bare, err := w.mgr.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "bare", Proxies: []model.ProxyInput{{Host: "127.0.0.1", Port: fwd.Port}}})
	require.NoError(t, err)
	refuse(map[string]any{"pool_name": "bare"}, "400", "bad_request", "target_url is required")
	rep = check(map[string]any{"pool_name": "bare", "options": map[string]any{"target_url": target}})
	require.Equal(t, model.ProxyActive, rep.Results[0].Status)
	// No health_check: threshold 1, the result's status applies at once.
	check(map[string]any{"proxy_id": bare[0].ID, "options": map[string]any{"target_url": tg.http.URL + "/status/404"}})
	require.Equal(t, model.ProxyInactive, status(bare[0].ID))
	check(map[string]any{"pool_name": "bare", "options": map[string]any{"target_url": target}})
	require.Equal(t, model.ProxyActive, status(bare[0].ID))

	// An empty pool: no results.
	_, err = w.mgr.CreatePool(ctx, model.PoolCreateRequest{Name: "empty"})
	require.NoError(t, err)
	rep = check(map[string]any{"pool_name": "empty", "options": map[string]any{"target_url": target}})
	require.Empty(t, rep.Results)
}

// TestHealthCheckWithoutChecker serves the contract with a broker that was
// given no health checker (every worker has one): admin.health.check is a
// 503 that says so.
func TestHealthCheckWithoutChecker(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	w := workertest.Start(t, nc, workertest.Config{Prefix: "unused"})
	brk, err := broker.Start(nc, w.Manager)
	require.NoError(t, err)
	t.Cleanup(func() { _ = brk.Stop(context.Background()) })
	require.NoError(t, nc.Flush())
	code, data := call(t, nc, "pharox.admin.health.check", map[string]any{"pool_name": "x"})
	require.Equal(t, "503", code)
	require.Contains(t, string(data), "health checks are not enabled")
}

// requireConnFailure requires msg to be a failure to reach a proxy whose
// socket is closed: the connection refused, or, when the close races the
// connect, reset or ended (EOF) before any answer.
func requireConnFailure(t testing.TB, msg string) {
	t.Helper()
	require.Regexp(t, `connection refused|connection reset by peer|\bEOF\b`, msg)
}
