// Package deploy holds the sample deployment files; its tests check that
// the roles of nats-server.conf give each user what it needs and nothing
// more, on a real server loaded from the shipped file.
package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
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
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
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
		// Barrier: a request is answered once its write commits, and its
		// events are published after that; the worker has stored every
		// event of the leases above, so the consumer's num_pending counts
		// each message it will deliver (one stored later would be delivered
		// too, and refused once more than counted).
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		require.NoError(t, w.Events.Flush(fctx))
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
		refusedNothing(t, slog, worker)
	})

	t.Run("a worker with --shards 3 is refused nothing", testShardedWorker)
}

// refusedNothing checks that the server refused the worker nothing, in its
// log and on the worker's connection.
func refusedNothing(t *testing.T, slog *authtest.ServerLog, worker *user) {
	t.Helper()
	for _, v := range slog.Violations() {
		require.NotContains(t, v, "user:worker", "the worker role lacks a permission")
	}
	require.NotEmpty(t, slog.Violations(), "the leasers' violations are logged, so the log works")
	select {
	case err := <-worker.violations:
		t.Fatalf("the worker was refused: %v", err)
	default:
	}
}

// testShardedWorker runs a worker with --shards 3 as `worker` on a server of
// its own (a deployment's shard count is fixed when its buckets are made):
// a leaser leases and releases in a pool of each shard, the ended leases
// are read back from their shards' history buckets, the expiry sweeps end a
// lease in each shard, the events arrive, and
// the server refused the worker nothing; a leaser and an admin are still
// refused the shard buckets' $KV subjects and JetStream API.
func testShardedWorker(t *testing.T) {
	const shards = 3
	opts := authtest.DeployOptions(t, "nats-server.conf")
	srv, slog := authtest.RunServerLogged(t, opts)
	ctx := t.Context()

	wu := login(t, srv, "worker", authtest.WorkerPassword)
	w, err := worker.Start(ctx, worker.Config{Conn: wu.nc, Shards: shards, SweepInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(context.Background()) })
	require.Equal(t, []string{"PHAROX_PROXIES_0", "PHAROX_PROXIES_1", "PHAROX_PROXIES_2"}, w.Store.ProxyBuckets())

	admin := login(t, srv, "admin", authtest.AdminPassword)
	leaser := login(t, srv, "leaser", authtest.LeaserPassword)
	events := make(chan client.Event, 64)
	sub, err := leaser.c.SubscribeEvents(ctx, func(ev client.Event) { events <- ev })
	require.NoError(t, err)
	defer sub.Stop()

	// One pool per shard.
	pools := make([]string, shards)
	for i, found := 0, 0; found < shards; i++ {
		name := fmt.Sprintf("pool%d", i)
		if s := kvstore.ShardOf(name, shards); pools[s] == "" {
			pools[s], found = name, found+1
		}
	}
	js, err := jetstream.New(wu.nc)
	require.NoError(t, err)
	proxyIDs := make([]string, shards)
	leaseIDs := map[string]bool{}
	for shard, pool := range pools {
		_, err := admin.c.CreatePool(ctx, model.PoolCreateRequest{Name: pool})
		require.NoError(t, err)
		added, err := admin.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: []model.ProxyInput{
			{Host: "127.0.0.1", Port: 3128 + shard, Credentials: &model.Credentials{User: "bot", Password: "s3cret"}},
		}})
		require.NoError(t, err)
		proxyIDs[shard] = added[0].ID

		lease, proxy, err := leaser.c.Acquire(ctx, model.AcquireRequest{PoolName: pool})
		require.NoError(t, err)
		require.NotNil(t, lease, pool)
		require.Equal(t, proxyIDs[shard], proxy.ID)
		leaseIDs[lease.ID] = true
		st, err := leaser.c.Stats(ctx, pool)
		require.NoError(t, err)
		require.Equal(t, 1, st.TotalLeases, pool)
		released, err := leaser.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		require.NoError(t, err)
		require.Equal(t, model.LeaseReleased, released.Status)
		// Read back from the shard's lease history.
		ended, err := leaser.c.Lease(ctx, lease.ID)
		require.NoError(t, err)
		require.Equal(t, model.LeaseReleased, ended.Status)

		// The proxy is in its shard's bucket, read with the worker's rights.
		kv, err := js.KeyValue(ctx, kvstore.ProxiesBucketName(shard, shards))
		require.NoError(t, err)
		_, err = kv.Get(ctx, proxyIDs[shard])
		require.NoError(t, err, "shard %d", shard)
	}
	// A lease of one second in each pool, which the expiry sweeps end.
	expiring := map[string]bool{}
	for _, pool := range pools {
		lease, _, err := leaser.c.Acquire(ctx, model.AcquireRequest{PoolName: pool, DurationSeconds: new(1)})
		require.NoError(t, err)
		require.NotNil(t, lease, pool)
		expiring[lease.ID] = true
	}
	// Every acquire, release and expiry is published as an event.
	seen := map[string]bool{}
	for len(seen) < 3*shards {
		select {
		case ev := <-events:
			l := ev.Lease()
			switch {
			case l == nil:
			case leaseIDs[l.ID] && (ev.Name == model.EventAcquired || ev.Name == model.EventReleased),
				expiring[l.ID] && ev.Name == model.EventExpired:
				seen[ev.Name+" "+l.ID] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("events seen: %v", seen)
		}
	}

	for shard := range shards {
		proxies, leases := kvstore.ProxiesBucketName(shard, shards), kvstore.LeasesBucketName(shard, shards)
		for _, s := range []string{
			"$KV." + proxies + "." + proxyIDs[shard],
			"$KV." + leases + ".x",
			"$JS.API.DIRECT.GET.KV_" + proxies + ".$KV." + proxies + "." + proxyIDs[shard],
			"$JS.API.STREAM.MSG.GET.KV_" + proxies,
			"$JS.API.STREAM.INFO.KV_" + leases,
			"$JS.API.STREAM.DELETE.KV_" + proxies,
			"$JS.API.CONSUMER.CREATE.KV_" + leases + ".spy",
		} {
			leaser.publishDenied(t, s)
			admin.publishDenied(t, s)
		}
		leaser.subscribeDenied(t, "$KV."+proxies+".>", "")
	}

	refusedNothing(t, slog, wu)
}

// update rewrites the generated shard section of nats-server.conf.
var update = flag.Bool("update", false, "rewrite the shard buckets section of nats-server.conf")

const (
	shardsBegin = "    # BEGIN shard buckets\n"
	shardsEnd   = "    # END shard buckets\n"
)

// shardSection is the worker's publish permissions on the shard buckets of
// every --shards up to kvstore.MaxShards: one line per bucket, the same
// subjects as the S = 1 buckets have (a proxies stream's step-down too).
func shardSection() string {
	var b strings.Builder
	b.WriteString(shardsBegin)
	for i := range kvstore.MaxShards {
		for _, bucket := range []string{kvstore.ProxiesBucketName(i, kvstore.MaxShards), kvstore.LeasesBucketName(i, kvstore.MaxShards)} {
			stream := "KV_" + bucket
			fmt.Fprintf(&b, "    %q, %q, %q, %q, %q, %q",
				"$KV."+bucket+".>",
				"$JS.API.STREAM.*."+stream,
				"$JS.API.STREAM.MSG.GET."+stream,
				"$JS.API.DIRECT.GET."+stream+".>",
				"$JS.API.CONSUMER.*."+stream+".>",
				"$JS.FC."+stream+".>")
			if strings.HasPrefix(bucket, kvstore.ProxiesBucket) {
				// The proxies streams' leaders are spread over the nodes.
				fmt.Fprintf(&b, ", %q", "$JS.API.STREAM.LEADER.STEPDOWN."+stream)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(shardsEnd)
	return b.String()
}

// TestShardSubjects checks that the worker role covers the shard buckets of
// every --shards allowed, with exactly what it has on the S = 1 buckets,
// and that the generated section of nats-server.conf is current (-update
// rewrites it).
func TestShardSubjects(t *testing.T) {
	const path = "nats-server.conf"
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	conf := string(raw)
	begin, end := strings.Index(conf, shardsBegin), strings.Index(conf, shardsEnd)
	require.True(t, begin >= 0 && end > begin, "markers of the shard section")
	if want := shardSection(); conf[begin:end+len(shardsEnd)] != want {
		if !*update {
			t.Fatalf("the shard section of %s is stale: go test ./deploy -run TestShardSubjects -update", path)
		}
		conf = conf[:begin] + want + conf[end+len(shardsEnd):]
		require.NoError(t, os.WriteFile(path, []byte(conf), 0o644))
	}

	// On the parsed file: each shard bucket has the subjects of its S = 1
	// bucket with the name changed, and no bucket past the last shard has any.
	opts := authtest.DeployOptions(t, path)
	var allow []string
	for _, u := range opts.Users {
		if u.Username == "worker" {
			allow = u.Permissions.Publish.Allow
		}
	}
	require.NotEmpty(t, allow)
	naming := func(bucket string) []string { // the subjects with bucket or its stream as a token
		var out []string
		for _, s := range allow {
			toks := strings.Split(s, ".")
			if slices.Contains(toks, bucket) || slices.Contains(toks, "KV_"+bucket) {
				out = append(out, s)
			}
		}
		return out
	}
	for _, base := range []string{kvstore.ProxiesBucket, kvstore.LeasesBucket} {
		one := naming(base)
		require.Len(t, one, map[string]int{kvstore.ProxiesBucket: 7, kvstore.LeasesBucket: 6}[base], base)
		for i := range kvstore.MaxShards + 1 {
			bucket := kvstore.ProxiesBucketName(i, 2)
			if base == kvstore.LeasesBucket {
				bucket = kvstore.LeasesBucketName(i, 2)
			}
			if i == kvstore.MaxShards {
				require.Empty(t, naming(bucket), bucket)
				continue
			}
			var want []string
			for _, s := range one {
				toks := strings.Split(s, ".")
				for j, tok := range toks {
					switch tok {
					case base:
						toks[j] = bucket
					case "KV_" + base:
						toks[j] = "KV_" + bucket
					}
				}
				want = append(want, strings.Join(toks, "."))
			}
			require.ElementsMatch(t, want, naming(bucket), bucket)
		}
	}
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
