// Package deploy holds the sample deployment files; its tests check that
// the roles of nats-server.conf give each user what it needs and nothing
// more, on a real server loaded from the shipped file.
package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/natsconn"
)

// user is one connection with a role, and the permission violations the
// server reported to it.
type user struct {
	nc         *nats.Conn
	c          *client.Client
	violations chan error
}

func login(t *testing.T, srv *server.Server, name, password string) *user {
	t.Helper()
	cfg := natsconn.Config{URL: srv.ClientURL(), User: name, Password: natsconn.Secret(password)}
	if name != "worker" {
		cfg.InboxPrefix = "_INBOX_" + name
	}
	s, err := cfg.Resolve()
	require.NoError(t, err)
	u := &user{violations: make(chan error, 64)}
	u.nc, err = s.Connect(nats.Name(name), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			u.violations <- err
		}
	}))
	require.NoError(t, err)
	t.Cleanup(u.nc.Close)
	u.c = client.New(u.nc, client.WithTimeout(5*time.Second))
	return u
}

// denied waits for the server's permissions violation naming subject.
func (u *user) denied(t *testing.T, op, subject string) {
	t.Helper()
	want := `Permissions Violation for ` + op + ` to "` + subject + `"`
	select {
	case err := <-u.violations:
		require.ErrorContains(t, err, want)
	case <-time.After(5 * time.Second):
		t.Fatalf("no permissions violation for %s to %s", op, subject)
	}
}

func (u *user) publishDenied(t *testing.T, subject string) {
	t.Helper()
	require.NoError(t, u.nc.PublishRequest(subject, u.nc.NewInbox(), []byte(`{}`)))
	u.denied(t, "Publish", subject)
}

func (u *user) subscribeDenied(t *testing.T, subject, queue string) {
	t.Helper()
	_, err := u.nc.QueueSubscribe(subject, queue, func(*nats.Msg) { t.Errorf("message on %s", subject) })
	require.NoError(t, err) // refused asynchronously
	u.denied(t, "Subscription", subject)
}

func TestRoles(t *testing.T) {
	opts := authtest.DeployOptions(t, "nats-server.conf")
	authtest.AddLeaser(t, opts, "leaser2", "leaser2-pw")
	srv, slog := authtest.RunServerLogged(t, opts)
	ctx := t.Context()

	// The worker runs as `worker` and nothing more.
	worker := login(t, srv, "worker", authtest.WorkerPassword)
	core, workerLog := observer.New(zap.DebugLevel)
	w := workertest.Start(t, worker.nc, workertest.Config{Log: zap.New(core)})
	checker, err := health.New(ctx, worker.nc, w.Manager) // the health buckets too
	require.NoError(t, err)
	t.Cleanup(checker.Close)

	admin := login(t, srv, "admin", authtest.AdminPassword)
	leaser := login(t, srv, "leaser", authtest.LeaserPassword)
	leaser2 := login(t, srv, "leaser2", "leaser2-pw")

	_, err = admin.c.CreatePool(ctx, model.PoolCreateRequest{Name: "scrapers"})
	require.NoError(t, err)
	proxies, err := admin.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "scrapers", Proxies: []model.ProxyInput{
		{Host: "127.0.0.1", Port: 3128, Credentials: &model.Credentials{User: "bot", Password: "proxy-s3cret"}},
	}})
	require.NoError(t, err)
	proxyID := proxies[0].ID

	t.Run("leaser leases and replays events through its own inbox", func(t *testing.T) {
		since := time.Now().Add(-time.Minute)
		events := make(chan client.Event, 16)
		sub, err := leaser.c.SubscribeEvents(ctx, func(ev client.Event) { events <- ev }, client.WithReplaySince(since))
		require.NoError(t, err)
		defer sub.Stop()

		consumer := "crawler-1"
		lease, proxy, err := leaser.c.Acquire(ctx, model.AcquireRequest{PoolName: "scrapers", ConsumerName: &consumer})
		require.NoError(t, err)
		require.NotNil(t, lease)
		require.Equal(t, "http://bot:proxy-s3cret@127.0.0.1:3128", proxy.URL)
		_, err = leaser.c.Lease(ctx, lease.ID)
		require.NoError(t, err)
		_, err = leaser.c.Stats(ctx, "scrapers")
		require.NoError(t, err)
		renewed, err := leaser.c.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: new(60)})
		require.NoError(t, err)
		require.Equal(t, lease.ID, renewed.ID)
		released, err := leaser.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		require.NoError(t, err)
		require.Equal(t, model.LeaseReleased, released.Status)

		for _, want := range []string{model.EventAcquired, model.EventRenewed, model.EventReleased} {
			select {
			case ev := <-events:
				require.Equal(t, want, ev.Name)
				require.Equal(t, lease.ID, ev.Lease().ID)
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s event replayed", want)
			}
		}
	})

	t.Run("leaser cannot administer", func(t *testing.T) {
		// The request is refused by the server, asynchronously: the client
		// hears of it on its error handler while the request waits.
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- leaser.c.DeletePool(rctx, model.PoolDeleteRequest{Name: "scrapers", Force: true}) }()
		leaser.denied(t, "Publish", "pharox.admin.pools.delete")
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		pools, err := admin.c.ListPools(ctx)
		require.NoError(t, err)
		require.Len(t, pools, 1, "the pool is still there")

		for _, s := range []string{"pharox.admin.proxies.list", "pharox.admin.proxies.get", "pharox.admin.pools.create", "pharox.cleanup", "$SRV.PING"} {
			leaser.publishDenied(t, s)
		}
	})

	t.Run("leaser cannot read or change the buckets", func(t *testing.T) {
		leaser.subscribeDenied(t, "$KV.>", "")
		for _, s := range []string{
			"$JS.API.DIRECT.GET.KV_PHAROX_PROXIES.$KV.PHAROX_PROXIES." + proxyID,
			"$JS.API.STREAM.MSG.GET.KV_PHAROX_PROXIES",
			"$JS.API.CONSUMER.CREATE.KV_PHAROX_PROXIES.spy",
			"$JS.API.STREAM.INFO.KV_PHAROX_PROXIES",
			"$JS.API.STREAM.DELETE.KV_PHAROX_POOLS",
			"$JS.API.STREAM.PURGE.PHAROX_EVENTS",
			"$JS.API.STREAM.DELETE.PHAROX_EVENTS",
			"$KV.PHAROX_POOLS.scrapers",
		} {
			leaser.publishDenied(t, s)
		}
		js, err := jetstream.New(leaser.nc)
		require.NoError(t, err)
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err = js.KeyValue(sctx, "PHAROX_PROXIES")
		require.Error(t, err)
		leaser.denied(t, "Publish", "$JS.API.STREAM.INFO.KV_PHAROX_PROXIES")
	})

	t.Run("leaser cannot publish events", func(t *testing.T) {
		seen := make(chan *nats.Msg, 16)
		sub, err := admin.nc.ChanSubscribe("pharox.events.>", seen)
		require.NoError(t, err)
		defer sub.Unsubscribe()
		require.NoError(t, admin.nc.Flush())

		leaser.publishDenied(t, "pharox.events.released")
		// Barrier: a real event published after the fake one must be the
		// first to arrive.
		lease, _, err := leaser.c.Acquire(ctx, model.AcquireRequest{PoolName: "scrapers"})
		require.NoError(t, err)
		select {
		case m := <-seen:
			require.Equal(t, "pharox.events.acquired", m.Subject)
		case <-time.After(5 * time.Second):
			t.Fatal("no acquired event")
		}
		_, err = leaser.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		require.NoError(t, err)
	})

	t.Run("leaser cannot pose as a worker", func(t *testing.T) {
		leaser.subscribeDenied(t, "pharox.acquire", "q")
		leaser.subscribeDenied(t, "pharox.>", "")
		leaser.subscribeDenied(t, "$SRV.PING.pharox", "")
		// Every acquire is still answered by the worker.
		for range 5 {
			lease, proxy, err := leaser2.c.Acquire(ctx, model.AcquireRequest{PoolName: "scrapers"})
			require.NoError(t, err)
			require.Equal(t, proxyID, proxy.ID)
			_, err = leaser2.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
			require.NoError(t, err)
		}
	})

	t.Run("a leaser cannot read another leaser's replies", func(t *testing.T) {
		leaser2.subscribeDenied(t, "_INBOX_leaser.>", "")
		leaser2.subscribeDenied(t, "_INBOX.>", "")
		leaser2.subscribeDenied(t, ">", "")
		leaser2.subscribeDenied(t, "_INBOX_admin.>", "")
	})

	t.Run("stored events pushed to a service subject change nothing", func(t *testing.T) {
		// A leaser may create consumers on PHAROX_EVENTS (to replay it), and
		// NATS checks no permission for a push consumer's deliver subject:
		// stored events can be delivered to pharox.admin.pools.delete. Every
		// endpoint refuses them (unknown fields), so nothing is deleted.
		before := endpointStats(t, admin, "admin.pools.delete")
		req := `{"stream_name":"PHAROX_EVENTS","config":{"name":"evil","deliver_subject":"pharox.admin.pools.delete","deliver_group":"q","deliver_policy":"all","ack_policy":"none"}}`
		reply, err := leaser.nc.Request("$JS.API.CONSUMER.CREATE.PHAROX_EVENTS.evil", []byte(req), 5*time.Second)
		require.NoError(t, err)
		var created struct {
			NumPending int `json:"num_pending"`
		}
		require.NoError(t, json.Unmarshal(reply.Data, &created))
		require.Positive(t, created.NumPending)
		// Barrier: the worker has refused every delivery as a bad request.
		// (A delivered message keeps its stream subject, pharox.events.*.)
		refused := func() int {
			return workerLog.FilterMessage("request refused").FilterField(zap.String("code", "bad_request")).
				FilterField(zap.String("message", `json: unknown field "lease"`)).Len()
		}
		require.Eventually(t, func() bool { return refused() >= created.NumPending }, 5*time.Second, 10*time.Millisecond)
		require.Equal(t, created.NumPending, refused())
		require.Equal(t, before.NumRequests+created.NumPending, endpointStats(t, admin, "admin.pools.delete").NumRequests)
		pools, err := admin.c.ListPools(ctx)
		require.NoError(t, err)
		require.Len(t, pools, 1)
	})

	t.Run("admin can do every admin operation", func(t *testing.T) {
		_, err := admin.c.CreatePool(ctx, model.PoolCreateRequest{Name: "admin-pool"})
		require.NoError(t, err)
		_, err = admin.c.UpdatePool(ctx, model.PoolUpdateRequest{Name: "admin-pool", Description: model.Some("x")})
		require.NoError(t, err)
		added, err := admin.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "admin-pool", Proxies: []model.ProxyInput{{Host: "127.0.0.1", Port: 1}}})
		require.NoError(t, err)
		id := added[0].ID
		page, err := admin.c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "admin-pool"})
		require.NoError(t, err)
		require.Len(t, page.Proxies, 1)
		_, err = admin.c.GetProxy(ctx, id)
		require.NoError(t, err)
		_, err = admin.c.UpdateProxy(ctx, model.ProxyUpdateRequest{ProxyID: id, Status: model.Some(model.ProxyBanned)})
		require.NoError(t, err)
		_, err = admin.c.ApplyHealth(ctx, model.HealthApplyRequest{ProxyID: id, Status: model.ProxyInactive, Protocol: model.ProtocolHTTP})
		require.NoError(t, err)
		// The pool has no health_check options: the worker answers 400 for
		// the missing target_url, which proves the request reached it.
		_, err = admin.c.HealthCheck(ctx, model.HealthCheckRequest{ProxyID: &id})
		require.ErrorIs(t, err, model.ErrBadRequest)
		require.ErrorContains(t, err, "target_url")
		_, err = admin.c.EnsureConsumer(ctx, "crawler-9")
		require.NoError(t, err)
		consumers, err := admin.c.ListConsumers(ctx)
		require.NoError(t, err)
		require.NotEmpty(t, consumers)
		_, err = admin.c.Cleanup(ctx)
		require.NoError(t, err)
		require.NoError(t, admin.c.DeleteProxy(ctx, model.ProxyDeleteRequest{ProxyID: id}))
		require.NoError(t, admin.c.DeletePool(ctx, model.PoolDeleteRequest{Name: "admin-pool"}))
		// Service discovery, as `nats micro ls` does it.
		ping, err := admin.nc.Request("$SRV.PING.pharox", nil, 5*time.Second)
		require.NoError(t, err)
		require.Contains(t, string(ping.Data), `"name":"pharox"`)
		select {
		case err := <-admin.violations:
			t.Fatalf("admin was refused: %v", err)
		default:
		}
	})

	t.Run("the worker was refused nothing", func(t *testing.T) {
		for _, v := range slog.Violations() {
			require.NotContains(t, v, "user:worker", "the worker role lacks a permission")
		}
		require.NotEmpty(t, slog.Violations(), "the leasers' violations are logged, so the log works")
		select {
		case err := <-worker.violations:
			t.Fatalf("the worker was refused: %v", err)
		default:
		}
	})
}

// endpointStats reads one endpoint's micro statistics.
func endpointStats(t *testing.T, u *user, name string) (s struct {
	NumRequests int `json:"num_requests"`
	NumErrors   int `json:"num_errors"`
}) {
	t.Helper()
	m, err := u.nc.Request("$SRV.STATS.pharox", nil, 5*time.Second)
	require.NoError(t, err)
	var stats struct {
		Endpoints []struct {
			Name        string `json:"name"`
			Subject     string `json:"subject"`
			NumRequests int    `json:"num_requests"`
			NumErrors   int    `json:"num_errors"`
		} `json:"endpoints"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &stats))
	for _, e := range stats.Endpoints {
		if strings.HasSuffix(e.Subject, "."+name) {
			s.NumRequests, s.NumErrors = e.NumRequests, e.NumErrors
			return s
		}
	}
	t.Fatalf("no endpoint %s in %s", name, m.Data)
	return s
}
