package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/schemas"
)

// servedOps are the operations this worker serves; each must be a
// contract operation with schemas.
var servedOps = []string{
	"acquire", "release", "renew", "leases.get", "cleanup", "stats",
	"admin.pools.create", "admin.pools.list", "admin.pools.update", "admin.pools.delete",
	"admin.proxies.add", "admin.proxies.list", "admin.proxies.get", "admin.proxies.update", "admin.proxies.delete",
	"admin.consumers.ensure", "admin.consumers.list", "admin.health.apply", "admin.health.last",
}

func rawField(t testing.TB, doc []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &m))
	v, ok := m[key]
	require.True(t, ok, "no key %q in %s", key, doc)
	return v
}

// --- discovery and load sharing --------------------------------------------

func TestDiscovery(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.workers[0]

	ping := srvReply[micro.Ping](t, e.nc, "$SRV.PING.pharox")
	require.Equal(t, "pharox", ping.Name)
	require.Equal(t, broker.Version, ping.Version)
	require.Equal(t, micro.PingResponseType, ping.Type)
	require.Equal(t, w.Broker.Info().ID, ping.ID)

	info := srvReply[micro.Info](t, e.nc, "$SRV.INFO.pharox")
	require.Equal(t, "pharox", info.Name)
	require.Equal(t, broker.Version, info.Version)
	require.Equal(t, micro.InfoResponseType, info.Type)
	require.Equal(t, "pharox", info.Metadata["subject_prefix"])

	subjects := map[string]micro.EndpointInfo{}
	for _, ep := range info.Endpoints {
		subjects[ep.Subject] = ep
		require.Equal(t, micro.DefaultQueueGroup, ep.QueueGroup, "endpoint %s uses the default queue group", ep.Subject)
		require.NotContains(t, ep.Name, ".")
		op := strings.TrimPrefix(ep.Subject, "pharox.")
		reqName, _, ok := schemas.Operation(op)
		require.True(t, ok, "endpoint %s is not a contract operation", ep.Subject)
		require.Equal(t, reqName, ep.Metadata["request_schema"], "endpoint %s", ep.Subject)
		require.True(t, e.sch.Has(ep.Metadata["request_schema"]))
		limit := fmt.Sprint(broker.MaxBody)
		if op == "admin.proxies.add" {
			limit = fmt.Sprint(broker.MaxProxiesBody)
		}
		require.Equal(t, limit, ep.Metadata["max_body_bytes"], "endpoint %s", ep.Subject)
	}
	for _, op := range servedOps {
		require.Contains(t, subjects, "pharox."+op, "endpoint %s is announced", op)
	}
	require.ElementsMatch(t, w.Broker.Subjects(), slices.Collect(maps.Keys(subjects)))

	// The shared $SRV subjects answer too.
	for _, subj := range []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS.pharox", "$SRV.PING.pharox." + ping.ID} {
		msg, err := e.nc.Request(subj, nil, requestTimeout)
		require.NoError(t, err, subj)
		require.Contains(t, string(msg.Data), `"name":"pharox"`, subj)
	}

	// Every served subject answers through the micro service.
	for _, op := range servedOps {
		msg := e.raw(op, []byte(`{"no_such_field_`+strings.ReplaceAll(op, ".", "_")+`":1}`))
		det := requireErrorReply(t, e.sch, msg, 400, "bad_request")
		require.Contains(t, det.Message, "no_such_field_"+strings.ReplaceAll(op, ".", "_"))
	}
}

func TestQueueGroupSharesLoad(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	e.createPool("shared")
	const n = 64
	for i := 0; i < n; i++ {
		st := e.stats("shared")
		require.Equal(t, "shared", st.PoolName)
	}

	// Collect $SRV.STATS from both instances.
	inbox := nats.NewInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.PublishRequest("$SRV.STATS.pharox", inbox, nil))
	byID := map[string]micro.Stats{}
	for len(byID) < 2 {
		msg, err := sub.NextMsg(requestTimeout)
		require.NoError(t, err, "waiting for $SRV.STATS of both workers")
		var st micro.Stats
		require.NoError(t, json.Unmarshal(msg.Data, &st))
		require.Equal(t, "pharox", st.Name)
		byID[st.ID] = st
	}
	total := 0
	for _, w := range e.workers {
		info := w.Broker.Info()
		st, ok := byID[info.ID]
		require.True(t, ok, "worker %s answered $SRV.STATS", info.ID)
		served := 0
		for _, ep := range st.Endpoints {
			if ep.Subject == "pharox.stats" {
				served = ep.NumRequests
				require.Zero(t, ep.NumErrors)
				require.Equal(t, micro.DefaultQueueGroup, ep.QueueGroup)
			}
		}
		require.Positive(t, served, "worker %s answered some stats requests", info.ID)
		total += served
	}
	require.Equal(t, n, total, "every request was answered by exactly one worker")
}

// --- leasing ---------------------------------------------------------------

func TestAcquireReleaseLifecycle(t *testing.T) {
	e := newEnv(t, envConfig{})
	pool := e.createPool("life")
	px := e.addProxies("life", map[string]any{
		"host": "10.0.0.1", "port": 8080, "protocol": "socks5", "max_concurrency": 1,
		"credentials": map[string]any{"user": "u@x", "password": "p:w/d"},
		"country":     "AR", "city": "Cordoba", "latitude": -31.4, "longitude": -64.18,
	})[0]
	require.Equal(t, "socks5://u%40x:p%3Aw%2Fd@10.0.0.1:8080", px.URL)
	require.Equal(t, pool.ID, px.PoolID)
	require.Equal(t, model.ProxyActive, px.Status)
	require.Nil(t, px.CheckedAt)

	// acquire: the lease and the proxy, with its slot counted.
	acqReq := map[string]any{"pool_name": "life", "consumer_name": "alice", "duration_seconds": 60,
		"filters": map[string]any{"country": "AR", "latitude": -31.4, "longitude": -64.18, "radius_km": 5}}
	acqRaw := e.ok("acquire", acqReq)
	var acq model.AcquireReply
	require.NoError(t, json.Unmarshal(acqRaw, &acq))
	require.NotNil(t, acq.Lease)
	lease := *acq.Lease
	require.Equal(t, model.LeaseActive, lease.Status)
	require.Nil(t, lease.ReleasedAt)
	require.Equal(t, px.ID, lease.ProxyID)
	require.Equal(t, "alice", lease.ConsumerName)
	require.Equal(t, pool.ID, lease.PoolID)
	require.Equal(t, 60*time.Second, lease.ExpiresAt.Sub(lease.AcquiredAt))
	require.Equal(t, 1, acq.Proxy.CurrentLeases)
	afterAcquire := e.stats("life")
	require.Equal(t, counts{Total: 1, Active: 1, Available: 0, Leased: 1, Leases: 1}, countsOf(afterAcquire))

	// The acquired event: the contract's payload, pool_stats after the change.
	evs := e.events(model.EventAcquired)
	require.Len(t, evs, 1)
	ae := decodeEvents[model.AcquireEvent](t, e.sch, evs)[0]
	require.JSONEq(t, string(rawField(t, acqRaw, "lease")), string(rawField(t, evs[0].Data, "lease")))
	require.Equal(t, "life", ae.PoolName)
	require.Equal(t, "alice", ae.ConsumerName)
	require.Equal(t, model.SelectorFirstAvailable, ae.Selector)
	require.NotNil(t, ae.Filters)
	require.Equal(t, "AR", *ae.Filters.Country)
	require.Equal(t, 5.0, *ae.Filters.RadiusKm)
	require.False(t, ae.CompletedAt.Before(ae.StartedAt))
	require.GreaterOrEqual(t, ae.DurationMs, 0.0)
	require.Equal(t, countsOf(afterAcquire), countsOf(*ae.PoolStats))
	require.Equal(t, "life", ae.PoolStats.PoolName)

	// leases.get shows it; the proxy counts it.
	got := e.getLease(lease.ID)
	require.Equal(t, lease.ID, got.ID)
	require.Equal(t, model.LeaseActive, got.Status)
	require.Equal(t, lease.FencingToken, got.FencingToken)
	require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)

	// Full: no proxy free is not an error, and publishes acquire_failed.
	none := e.ok("acquire", map[string]any{"pool_name": "life", "consumer_name": "bob", "selector": "least_used"})
	require.JSONEq(t, `{"lease":null,"proxy":null}`, string(none))
	fails := e.events(model.EventAcquireFailed)
	require.Len(t, fails, 1)
	fe := decodeEvents[model.AcquireEvent](t, e.sch, fails)[0]
	require.Nil(t, fe.Lease)
	require.Equal(t, "bob", fe.ConsumerName)
	require.Equal(t, model.SelectorLeastUsed, fe.Selector)
	require.Nil(t, fe.Filters)
	require.Equal(t, countsOf(afterAcquire), countsOf(*fe.PoolStats))
	require.Contains(t, string(fails[0].Data), `"filters":null`)

	// Releasing with another consumer's name: 403, and the lease stays.
	det := e.failWellFormed("release", map[string]any{"lease_id": lease.ID, "consumer_name": "mallory"}, 403, "forbidden")
	require.Contains(t, det.Message, "mallory")
	require.Equal(t, model.LeaseActive, e.getLease(lease.ID).Status)
	require.Empty(t, e.events(model.EventReleased))

	// Release by its consumer.
	e.clock.Advance(1500 * time.Millisecond)
	relRaw := e.ok("release", map[string]any{"lease_id": lease.ID, "consumer_name": "alice"})
	var rel model.LeaseReply
	require.NoError(t, json.Unmarshal(relRaw, &rel))
	require.Equal(t, model.LeaseReleased, rel.Lease.Status)
	require.NotNil(t, rel.Lease.ReleasedAt)
	require.Equal(t, e.clock.Now(), *rel.Lease.ReleasedAt)
	afterRelease := e.stats("life")
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1, Leased: 0, Leases: 0}, countsOf(afterRelease))
	require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)

	rels := e.events(model.EventReleased)
	require.Len(t, rels, 1)
	re := decodeEvents[model.ReleaseEvent](t, e.sch, rels)[0]
	require.JSONEq(t, string(rawField(t, relRaw, "lease")), string(rawField(t, rels[0].Data, "lease")))
	require.Equal(t, "life", re.PoolName)
	require.Equal(t, *rel.Lease.ReleasedAt, re.ReleasedAt)
	require.InDelta(t, 1500.0, re.LeaseDurationMs, 0.001)
	require.Equal(t, countsOf(afterRelease), countsOf(*re.PoolStats))

	// A second release: same reply, no second event, no second decrement.
	again := e.ok("release", map[string]any{"lease_id": lease.ID})
	require.Equal(t, string(relRaw), string(again))
	again = e.ok("release", map[string]any{"lease_id": lease.ID, "consumer_name": "alice"})
	require.Equal(t, string(relRaw), string(again))
	require.Len(t, e.events(model.EventReleased), 1)
	require.Equal(t, countsOf(afterRelease), countsOf(e.stats("life")))
	// ... and still 403 for a stranger.
	e.failWellFormed("release", map[string]any{"lease_id": lease.ID, "consumer_name": "mallory"}, 403, "forbidden")
	require.Equal(t, string(relRaw), string(e.ok("leases.get", map[string]any{"lease_id": lease.ID})))

	// The slot is free again, with a higher fencing token.
	l2, _ := e.mustAcquire(map[string]any{"pool_name": "life"})
	require.Equal(t, model.DefaultConsumer, l2.ConsumerName)
	require.Greater(t, l2.FencingToken, lease.FencingToken)
	require.Equal(t, 300*time.Second, l2.ExpiresAt.Sub(l2.AcquiredAt), "default duration")

	// Unknown lease and pool.
	unknown := uuid.NewString()
	det = e.failWellFormed("release", map[string]any{"lease_id": unknown}, 404, "lease_not_found")
	require.Contains(t, det.Message, unknown)
	e.failWellFormed("leases.get", map[string]any{"lease_id": unknown}, 404, "lease_not_found")
	det = e.failWellFormed("acquire", map[string]any{"pool_name": "latam"}, 404, "pool_not_found")
	require.Contains(t, det.Message, `"latam"`)
	e.failWellFormed("stats", map[string]any{"pool_name": "latam"}, 404, "pool_not_found")
	// A refused acquire publishes nothing.
	require.Len(t, e.events(model.EventAcquireFailed), 1)
	require.Len(t, e.events(model.EventAcquired), 2)
}

func TestSelectorsAndFilters(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("sel")
	ps := e.addProxies("sel",
		map[string]any{"host": "a", "port": 1, "country": "AR", "asn": 100, "isp": "x"},
		map[string]any{"host": "b", "port": 2, "country": "BR", "asn": 200},
		map[string]any{"host": "c", "port": 3, "country": "AR", "asn": 300, "source": "s"},
	)
	// first_available honours added order.
	l, p := e.mustAcquire(map[string]any{"pool_name": "sel"})
	require.Equal(t, ps[0].ID, p.ID)
	// least_used avoids the proxy with a lease.
	_, p = e.mustAcquire(map[string]any{"pool_name": "sel", "selector": "least_used"})
	require.Equal(t, ps[1].ID, p.ID)
	_, p = e.mustAcquire(map[string]any{"pool_name": "sel", "selector": "least_used"})
	require.Equal(t, ps[2].ID, p.ID)
	// round_robin walks the pool.
	var rr []string
	for i := 0; i < 3; i++ {
		_, p = e.mustAcquire(map[string]any{"pool_name": "sel", "selector": "round_robin"})
		rr = append(rr, p.ID)
	}
	require.ElementsMatch(t, []string{ps[0].ID, ps[1].ID, ps[2].ID}, rr)
	_, p = e.mustAcquire(map[string]any{"pool_name": "sel", "selector": "random"})
	require.Contains(t, []string{ps[0].ID, ps[1].ID, ps[2].ID}, p.ID)
	e.release(l.ID)

	cases := []struct {
		filters map[string]any
		want    []int
	}{
		{map[string]any{"country": "AR"}, []int{0, 2}},
		{map[string]any{"asn": 200}, []int{1}},
		{map[string]any{"any_of": []any{map[string]any{"asn": 100}, map[string]any{"asn": 300}}}, []int{0, 2}},
		{map[string]any{"none_of": []any{map[string]any{"country": "AR"}}}, []int{1}},
		{map[string]any{"all_of": []any{map[string]any{"country": "AR"}, map[string]any{"source": "s"}}}, []int{2}},
		{map[string]any{"country": "CL"}, nil},
		{map[string]any{"isp": "x", "source": nil}, []int{0}},
	}
	for _, c := range cases {
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			rep := e.acquire(map[string]any{"pool_name": "sel", "filters": c.filters, "selector": "round_robin", "duration_seconds": 1})
			if c.want == nil {
				require.Nil(t, rep.Lease, "filters %v", c.filters)
				require.Nil(t, rep.Proxy)
				continue
			}
			require.NotNil(t, rep.Lease, "filters %v", c.filters)
			seen[rep.Proxy.ID] = true
		}
		var want []string
		for _, i := range c.want {
			want = append(want, ps[i].ID)
		}
		require.ElementsMatch(t, want, slices.Collect(maps.Keys(seen)), "filters %v", c.filters)
	}
	// One event per acquire, each echoing its filters with every key.
	acquired := decodeEvents[model.AcquireEvent](t, e.sch, e.events(model.EventAcquired))
	require.Len(t, acquired, 7+6*4)
	failed := decodeEvents[model.AcquireEvent](t, e.sch, e.events(model.EventAcquireFailed))
	require.Len(t, failed, 4)
	require.Equal(t, "CL", *failed[0].Filters.Country)
	require.Equal(t, model.SelectorRoundRobin, failed[0].Selector)
	for _, m := range e.events(model.EventAcquired)[7:] {
		filters := rawField(t, m.Data, "filters")
		for _, key := range []string{"source", "country", "city", "isp", "asn", "latitude", "longitude", "radius_km", "all_of", "any_of", "none_of"} {
			require.Contains(t, string(filters), `"`+key+`":`)
		}
	}
}

func TestStatsAfterKnownSequence(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("st")
	require.Equal(t, counts{}, countsOf(e.stats("st")))
	ps := e.addProxies("st",
		map[string]any{"host": "a", "port": 1, "max_concurrency": 2},
		map[string]any{"host": "b", "port": 2},
		map[string]any{"host": "c", "port": 3, "status": "inactive"},
		map[string]any{"host": "d", "port": 4, "status": "banned", "max_concurrency": 1},
	)
	require.Equal(t, model.ProxyInactive, ps[2].Status)
	require.Equal(t, counts{Total: 4, Active: 2, Available: 2, Leased: 0, Leases: 0}, countsOf(e.stats("st")))

	l1, p := e.mustAcquire(map[string]any{"pool_name": "st", "duration_seconds": 30})
	require.Equal(t, ps[0].ID, p.ID)
	require.Equal(t, counts{Total: 4, Active: 2, Available: 2, Leased: 1, Leases: 1}, countsOf(e.stats("st")))
	l2, p := e.mustAcquire(map[string]any{"pool_name": "st", "duration_seconds": 30})
	require.Equal(t, ps[0].ID, p.ID)
	require.Equal(t, 2, p.CurrentLeases)
	require.Equal(t, counts{Total: 4, Active: 2, Available: 1, Leased: 1, Leases: 2}, countsOf(e.stats("st")))
	_, p = e.mustAcquire(map[string]any{"pool_name": "st", "duration_seconds": 60})
	require.Equal(t, ps[1].ID, p.ID)
	want := counts{Total: 4, Active: 2, Available: 1, Leased: 2, Leases: 3}
	require.Equal(t, want, countsOf(e.stats("st")))

	// Each acquired event's snapshot is the state right after it.
	acq := decodeEvents[model.AcquireEvent](t, e.sch, e.events(model.EventAcquired))
	require.Len(t, acq, 3)
	require.Equal(t, counts{4, 2, 2, 1, 1}, countsOf(*acq[0].PoolStats))
	require.Equal(t, counts{4, 2, 1, 1, 2}, countsOf(*acq[1].PoolStats))
	require.Equal(t, want, countsOf(*acq[2].PoolStats))

	e.release(l1.ID)
	require.Equal(t, counts{Total: 4, Active: 2, Available: 2, Leased: 2, Leases: 2}, countsOf(e.stats("st")))
	rel := decodeEvents[model.ReleaseEvent](t, e.sch, e.events(model.EventReleased))
	require.Len(t, rel, 1)
	require.Equal(t, counts{4, 2, 2, 2, 2}, countsOf(*rel[0].PoolStats))

	// A status change moves active and available, not the leases.
	var upd model.Proxy
	e.okInto("admin.health.apply", map[string]any{"proxy_id": ps[1].ID, "status": "inactive", "latency_ms": 0, "protocol": "http"}, &upd)
	require.Equal(t, model.ProxyInactive, upd.Status)
	require.Equal(t, counts{Total: 4, Active: 1, Available: 1, Leased: 2, Leases: 2}, countsOf(e.stats("st")))

	// Past their expiry, leases stop counting before any sweep.
	e.clock.Advance(31 * time.Second)
	require.Equal(t, counts{Total: 4, Active: 1, Available: 1, Leased: 1, Leases: 1}, countsOf(e.stats("st")))
	e.clock.Advance(30 * time.Second)
	require.Equal(t, counts{Total: 4, Active: 1, Available: 1, Leased: 0, Leases: 0}, countsOf(e.stats("st")))
	require.Equal(t, model.LeaseExpired, e.getLease(l2.ID).Status)
	st := e.stats("st")
	require.Equal(t, "st", st.PoolName)
	require.Equal(t, e.clock.Now(), st.CollectedAt)
}

func TestExpiredLeasesDoNotBlock(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("exp")
	px := e.addProxies("exp", map[string]any{"host": "a", "port": 1, "max_concurrency": 1})[0]

	l1, _ := e.mustAcquire(map[string]any{"pool_name": "exp", "consumer_name": "c1", "duration_seconds": 5})
	require.Nil(t, e.acquire(map[string]any{"pool_name": "exp", "consumer_name": "c2"}).Lease)

	// Past expires_at, nothing has swept it yet: it must not block.
	e.clock.Advance(5 * time.Second)
	got := e.getLease(l1.ID)
	require.Equal(t, model.LeaseExpired, got.Status)
	require.Equal(t, l1.ExpiresAt, *got.ReleasedAt)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1}, countsOf(e.stats("exp")))
	require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)

	l2, p2 := e.mustAcquire(map[string]any{"pool_name": "exp", "consumer_name": "c2", "duration_seconds": 5})
	require.Equal(t, px.ID, p2.ID)
	require.Greater(t, l2.FencingToken, l1.FencingToken)
	require.Equal(t, 1, p2.CurrentLeases)

	// The acquire's write recorded the expiry: one expired event.
	exp := decodeEvents[model.ExpiredEvent](t, e.sch, e.events(model.EventExpired))
	require.Len(t, exp, 1)
	require.Equal(t, l1.ID, exp[0].Lease.ID)
	require.Equal(t, model.LeaseExpired, exp[0].Lease.Status)
	require.Equal(t, l1.ExpiresAt, *exp[0].Lease.ReleasedAt)
	require.Equal(t, "exp", exp[0].PoolName)
	require.Equal(t, e.clock.Now(), exp[0].ExpiredAt)
	// The snapshot is taken after the write that freed the slot and took it again.
	require.Equal(t, counts{Total: 1, Active: 1, Available: 0, Leased: 1, Leases: 1}, countsOf(*exp[0].PoolStats))

	// Releasing the expired lease replies as expired and changes nothing.
	var rel model.LeaseReply
	e.okInto("release", map[string]any{"lease_id": l1.ID, "consumer_name": "c1"}, &rel)
	require.Equal(t, model.LeaseExpired, rel.Lease.Status)
	require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)
	require.Empty(t, e.events(model.EventReleased))
	require.Zero(t, cleanup(e))
	require.Len(t, e.events(model.EventExpired), 1)

	// A lease released after its expiry, before any sweep, replies expired;
	// the sweep then records it, once.
	e.clock.Advance(6 * time.Second)
	e.okInto("release", map[string]any{"lease_id": l2.ID}, &rel)
	require.Equal(t, model.LeaseExpired, rel.Lease.Status)
	require.Equal(t, l2.ExpiresAt, *rel.Lease.ReleasedAt)
	require.Empty(t, e.events(model.EventReleased))
	require.Equal(t, 1, cleanup(e))
	require.Zero(t, cleanup(e))
	exp = decodeEvents[model.ExpiredEvent](t, e.sch, e.events(model.EventExpired))
	require.Len(t, exp, 2)
	require.Equal(t, l2.ID, exp[1].Lease.ID)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1}, countsOf(*exp[1].PoolStats))
	e.okInto("release", map[string]any{"lease_id": l2.ID}, &rel)
	require.Equal(t, model.LeaseExpired, rel.Lease.Status)
	require.Empty(t, e.events(model.EventReleased))
}

func TestRenew(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("rn")
	px := e.addProxies("rn", map[string]any{"host": "h", "port": 1, "max_concurrency": 1})[0]
	l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 10})

	e.clock.Advance(4 * time.Second)
	raw := e.ok("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60, "consumer_name": "alice"})
	var rep model.LeaseReply
	require.NoError(t, json.Unmarshal(raw, &rep))
	r := *rep.Lease
	require.Equal(t, model.LeaseActive, r.Status)
	require.Equal(t, e.clock.Now().Add(60*time.Second), r.ExpiresAt)
	require.Equal(t, l.FencingToken, r.FencingToken, "renew keeps the fencing token")
	require.Equal(t, l.AcquiredAt, r.AcquiredAt)
	require.Equal(t, string(raw), string(e.ok("leases.get", map[string]any{"lease_id": l.ID})))

	evs := e.events(model.EventRenewed)
	require.Len(t, evs, 1)
	ev := decodeEvents[model.RenewedEvent](t, e.sch, evs)[0]
	require.JSONEq(t, string(rawField(t, raw, "lease")), string(rawField(t, evs[0].Data, "lease")))
	require.Equal(t, "rn", ev.PoolName)
	require.Equal(t, l.ExpiresAt, ev.PreviousExpiresAt)

	// Past the first expiry the renewed lease still holds its slot.
	e.clock.Advance(30 * time.Second)
	require.Equal(t, model.LeaseActive, e.getLease(l.ID).Status)
	require.Nil(t, e.acquire(map[string]any{"pool_name": "rn"}).Lease)
	require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)
	require.Zero(t, cleanup(e))

	before := e.snapshot([]string{"rn"}, []string{l.ID})
	e.failWellFormed("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60, "consumer_name": "bob"}, 403, "forbidden")
	e.failWellFormed("renew", map[string]any{"lease_id": uuid.NewString(), "duration_seconds": 60}, 404, "lease_not_found")
	e.requireInvalidRequest("renew", []byte(`{"lease_id":"`+l.ID+`"}`))
	e.fail("renew", map[string]any{"lease_id": l.ID}, 400, "bad_request")
	e.requireInvalidRequest("renew", []byte(`{"lease_id":"`+l.ID+`","duration_seconds":0}`))
	e.fail("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 0}, 400, "bad_request")
	e.requireInvalidRequest("renew", []byte(`{"lease_id":"`+l.ID+`","duration_seconds":86401}`))
	e.fail("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 86401}, 400, "bad_request")
	require.Equal(t, before, e.snapshot([]string{"rn"}, []string{l.ID}))

	// A released lease cannot be renewed.
	e.release(l.ID)
	det := e.failWellFormed("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60}, 409, "lease_not_active")
	require.Contains(t, det.Message, "released")
	require.Equal(t, model.LeaseReleased, e.getLease(l.ID).Status)

	// Nor an expired one, swept or not.
	l2, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "duration_seconds": 5})
	e.clock.Advance(5 * time.Second)
	det = e.failWellFormed("renew", map[string]any{"lease_id": l2.ID, "duration_seconds": 60}, 409, "lease_not_active")
	require.Contains(t, det.Message, "expired")
	require.Equal(t, model.LeaseExpired, e.getLease(l2.ID).Status)
	require.Len(t, e.events(model.EventRenewed), 1, "failed renews publish nothing")
	require.LessOrEqual(t, len(e.events(model.EventExpired)), 1)
	require.LessOrEqual(t, cleanup(e), 1)
	require.Len(t, e.events(model.EventExpired), 1)
	require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)
}

func cleanup(e *env) int {
	e.t.Helper()
	var rep model.CleanupReply
	raw := e.ok("cleanup", "{}")
	require.NoError(e.t, json.Unmarshal(raw, &rep))
	require.JSONEq(e.t, fmt.Sprintf(`{"released":%d}`, rep.Released), string(raw))
	return rep.Released
}

func TestCleanup(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("cl")
	e.createPool("cl2")
	e.addProxies("cl", map[string]any{"host": "a", "port": 1})
	e.addProxies("cl2", map[string]any{"host": "b", "port": 2})
	var short []string
	for i := 0; i < 3; i++ {
		l, _ := e.mustAcquire(map[string]any{"pool_name": "cl", "duration_seconds": 10})
		short = append(short, l.ID)
	}
	l, _ := e.mustAcquire(map[string]any{"pool_name": "cl2", "duration_seconds": 10})
	short = append(short, l.ID)
	long, _ := e.mustAcquire(map[string]any{"pool_name": "cl", "duration_seconds": 1000})
	require.Zero(t, cleanup(e), "nothing expired yet")
	// The empty body is {}.
	require.JSONEq(t, `{"released":0}`, string(e.raw("cleanup", nil).Data))

	e.clock.Advance(10 * time.Second)
	require.Equal(t, 4, cleanup(e))
	require.Zero(t, cleanup(e))
	exp := decodeEvents[model.ExpiredEvent](t, e.sch, e.events(model.EventExpired))
	require.Len(t, exp, 4)
	var ids []string
	for _, ev := range exp {
		ids = append(ids, ev.Lease.ID)
		require.Equal(t, model.LeaseExpired, ev.Lease.Status)
		require.Equal(t, ev.Lease.ExpiresAt, *ev.Lease.ReleasedAt)
		switch ev.PoolName {
		case "cl":
			require.Equal(t, counts{Total: 1, Active: 1, Available: 1, Leased: 1, Leases: 1}, countsOf(*ev.PoolStats))
		case "cl2":
			require.Equal(t, counts{Total: 1, Active: 1, Available: 1}, countsOf(*ev.PoolStats))
		default:
			t.Fatalf("expired event for pool %q", ev.PoolName)
		}
	}
	require.ElementsMatch(t, short, ids)
	for _, id := range short {
		require.Equal(t, model.LeaseExpired, e.getLease(id).Status)
	}
	require.Equal(t, model.LeaseActive, e.getLease(long.ID).Status)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1, Leased: 1, Leases: 1}, countsOf(e.stats("cl")))
}

// --- admin -----------------------------------------------------------------

func TestPoolsAdmin(t *testing.T) {
	e := newEnv(t, envConfig{})
	var p model.ProxyPool
	e.okInto("admin.pools.create", map[string]any{"name": "eu", "description": "Europe"}, &p)
	require.Equal(t, "Europe", *p.Description)
	require.Nil(t, p.HealthCheck)
	raw := e.ok("admin.pools.create", map[string]any{"name": "us"})
	require.Contains(t, string(raw), `"description":null`)
	require.Contains(t, string(raw), `"health_check":null`)

	det := e.failWellFormed("admin.pools.create", map[string]any{"name": "eu"}, 409, "conflict")
	require.Contains(t, det.Message, `"eu"`)

	var list model.PoolsReply
	e.okInto("admin.pools.list", "{}", &list)
	require.Len(t, list.Pools, 2)
	require.ElementsMatch(t, []string{"eu", "us"}, []string{list.Pools[0].Name, list.Pools[1].Name})

	// update: description, health check with pharox's option defaults, then clear.
	e.okInto("admin.pools.update", map[string]any{"name": "eu", "health_check": map[string]any{
		"enabled": true, "interval_seconds": 30, "failure_threshold": 3,
		"options": map[string]any{"target_url": "https://example.com/ip"}}}, &p)
	require.Equal(t, "Europe", *p.Description, "absent keys keep their value")
	require.NotNil(t, p.HealthCheck)
	require.Equal(t, 3, p.HealthCheck.FailureThreshold)
	o := p.HealthCheck.Options
	require.Equal(t, []int{200}, o.ExpectedStatusCodes)
	require.Equal(t, 2000.0, o.SlowThresholdMs)
	require.True(t, o.AllowRedirects)
	require.Equal(t, 1, o.Attempts)
	e.okInto("admin.pools.update", map[string]any{"name": "eu", "description": nil}, &p)
	require.Nil(t, p.Description)
	require.NotNil(t, p.HealthCheck)
	e.okInto("admin.pools.update", map[string]any{"name": "eu", "health_check": nil}, &p)
	require.Nil(t, p.HealthCheck)
	e.failWellFormed("admin.pools.update", map[string]any{"name": "nowhere", "description": "x"}, 404, "pool_not_found")

	// delete with active leases: 409 and nothing changes; force releases them.
	ps := e.addProxies("eu", map[string]any{"host": "a", "port": 1}, map[string]any{"host": "b", "port": 2})
	var leases []model.Lease
	for i := 0; i < 3; i++ {
		l, _ := e.mustAcquire(map[string]any{"pool_name": "eu", "selector": "least_used", "consumer_name": fmt.Sprintf("c%d", i)})
		leases = append(leases, l)
	}
	var ids []string
	for _, l := range leases {
		ids = append(ids, l.ID)
	}
	before := e.snapshot([]string{"eu", "us"}, ids)
	det = e.failWellFormed("admin.pools.delete", map[string]any{"name": "eu"}, 409, "conflict")
	require.Contains(t, det.Message, "force")
	e.failWellFormed("admin.pools.delete", map[string]any{"name": "eu", "force": false}, 409, "conflict")
	require.Equal(t, before, e.snapshot([]string{"eu", "us"}, ids))

	require.JSONEq(t, `{"deleted":true}`, string(e.ok("admin.pools.delete", map[string]any{"name": "eu", "force": true})))
	rel := decodeEvents[model.ReleaseEvent](t, e.sch, e.events(model.EventReleased))
	require.Len(t, rel, 3)
	var relIDs []string
	for _, ev := range rel {
		relIDs = append(relIDs, ev.Lease.ID)
		require.Equal(t, model.LeaseReleased, ev.Lease.Status)
		require.Equal(t, "eu", ev.PoolName)
	}
	require.ElementsMatch(t, ids, relIDs)
	for _, id := range ids {
		require.Equal(t, model.LeaseReleased, e.getLease(id).Status)
	}
	e.failWellFormed("stats", map[string]any{"pool_name": "eu"}, 404, "pool_not_found")
	e.failWellFormed("admin.proxies.get", map[string]any{"proxy_id": ps[0].ID}, 404, "proxy_not_found")
	e.okInto("admin.pools.list", "{}", &list)
	require.Len(t, list.Pools, 1)
	require.Equal(t, "us", list.Pools[0].Name)
	e.failWellFormed("admin.pools.delete", map[string]any{"name": "eu"}, 404, "pool_not_found")
	// A pool without leases goes without force; the name is free again.
	e.ok("admin.pools.delete", map[string]any{"name": "us"})
	e.createPool("eu")
	require.Equal(t, counts{}, countsOf(e.stats("eu")))
}

func TestProxiesAdmin(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("px")
	var inputs []map[string]any
	for i := 1; i <= 8; i++ {
		inputs = append(inputs, map[string]any{"host": fmt.Sprintf("10.0.0.%d", i), "port": 3000 + i})
	}
	added := e.addProxies("px", inputs...)
	ipv6 := e.addProxies("px", map[string]any{"host": "::1", "port": 1080, "protocol": "https", "status": "inactive", "asn": 64512})[0]
	require.Equal(t, "https://[::1]:1080", ipv6.URL)
	rawProxy := e.ok("admin.proxies.get", map[string]any{"proxy_id": ipv6.ID})
	for _, key := range []string{"checked_at", "credentials", "source", "country", "city", "latitude", "longitude", "isp", "max_concurrency"} {
		require.Equal(t, "null", string(rawField(t, rawProxy, key)), "unset %s is null", key)
	}
	var wantOrder []string
	for _, p := range added {
		wantOrder = append(wantOrder, p.ID)
		require.Equal(t, model.ProtocolHTTP, p.Protocol, "protocol defaults to http")
		require.Equal(t, model.ProxyActive, p.Status, "status defaults to active")
	}
	wantOrder = append(wantOrder, ipv6.ID)

	// Paging with a cursor, in added order.
	var got []string
	var cursor *string
	pages := 0
	for {
		req := map[string]any{"pool_name": "px", "limit": 4}
		if cursor != nil {
			req["cursor"] = *cursor
		}
		var page model.ProxiesPage
		e.okInto("admin.proxies.list", req, &page)
		pages++
		require.LessOrEqual(t, len(page.Proxies), 4)
		for _, p := range page.Proxies {
			got = append(got, p.ID)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = page.NextCursor
		require.Less(t, pages, 10)
	}
	require.Equal(t, wantOrder, got)
	require.Equal(t, 3, pages)
	// A page that ends exactly at the last proxy says so.
	var page model.ProxiesPage
	e.okInto("admin.proxies.list", map[string]any{"pool_name": "px", "limit": 9}, &page)
	require.Len(t, page.Proxies, 9)
	require.Nil(t, page.NextCursor)
	raw := e.ok("admin.proxies.list", map[string]any{"pool_name": "px", "limit": 9})
	require.Equal(t, "null", string(rawField(t, raw, "next_cursor")))
	// Default limit, status filter.
	e.okInto("admin.proxies.list", map[string]any{"pool_name": "px"}, &page)
	require.Len(t, page.Proxies, 9)
	e.okInto("admin.proxies.list", map[string]any{"pool_name": "px", "status": "inactive"}, &page)
	require.Len(t, page.Proxies, 1)
	require.Equal(t, ipv6.ID, page.Proxies[0].ID)
	e.okInto("admin.proxies.list", map[string]any{"pool_name": "px", "status": "active", "limit": 5}, &page)
	require.Len(t, page.Proxies, 5)
	require.NotNil(t, page.NextCursor)
	e.okInto("admin.proxies.list", map[string]any{"pool_name": "px", "status": "active", "limit": 5, "cursor": *page.NextCursor}, &page)
	require.Len(t, page.Proxies, 3)
	require.Nil(t, page.NextCursor)
	e.failWellFormed("admin.proxies.list", map[string]any{"pool_name": "nope"}, 404, "pool_not_found")
	e.failWellFormed("admin.proxies.add", map[string]any{"pool_name": "nope", "proxies": []any{map[string]any{"host": "h", "port": 1}}}, 404, "pool_not_found")

	// update: set, clear with null, leave the rest.
	target := added[0]
	var upd model.Proxy
	e.okInto("admin.proxies.update", map[string]any{"proxy_id": target.ID, "country": "DE", "max_concurrency": 2,
		"credentials": map[string]any{"user": "u", "password": "p"}, "protocol": "socks4"}, &upd)
	require.Equal(t, "DE", *upd.Country)
	require.Equal(t, 2, *upd.MaxConcurrency)
	require.Equal(t, "socks4://u:p@10.0.0.1:3001", upd.URL)
	require.Equal(t, target.Host, upd.Host)
	e.okInto("admin.proxies.update", map[string]any{"proxy_id": target.ID, "credentials": nil, "country": nil}, &upd)
	require.Nil(t, upd.Credentials)
	require.Nil(t, upd.Country)
	require.Equal(t, 2, *upd.MaxConcurrency)
	require.Equal(t, upd, e.getProxy(target.ID))
	unknown := uuid.NewString()
	det := e.failWellFormed("admin.proxies.update", map[string]any{"proxy_id": unknown, "city": "x"}, 404, "proxy_not_found")
	require.Contains(t, det.Message, unknown)
	e.failWellFormed("admin.proxies.get", map[string]any{"proxy_id": unknown}, 404, "proxy_not_found")
	e.failWellFormed("admin.proxies.delete", map[string]any{"proxy_id": unknown}, 404, "proxy_not_found")

	// delete with a live lease: 409; force releases it with its event.
	l, p := e.mustAcquire(map[string]any{"pool_name": "px", "filters": map[string]any{"country": nil, "city": nil}})
	require.Equal(t, target.ID, p.ID)
	before := e.snapshot([]string{"px"}, []string{l.ID})
	e.failWellFormed("admin.proxies.delete", map[string]any{"proxy_id": target.ID}, 409, "conflict")
	require.Equal(t, before, e.snapshot([]string{"px"}, []string{l.ID}))
	require.JSONEq(t, `{"deleted":true}`, string(e.ok("admin.proxies.delete", map[string]any{"proxy_id": target.ID, "force": true})))
	rel := decodeEvents[model.ReleaseEvent](t, e.sch, e.events(model.EventReleased))
	require.Len(t, rel, 1)
	require.Equal(t, l.ID, rel[0].Lease.ID)
	require.Equal(t, model.LeaseReleased, e.getLease(l.ID).Status)
	e.failWellFormed("admin.proxies.get", map[string]any{"proxy_id": target.ID}, 404, "proxy_not_found")
	require.Len(t, e.listAll("px"), 8)
	// Without leases no force is needed.
	require.JSONEq(t, `{"deleted":true}`, string(e.ok("admin.proxies.delete", map[string]any{"proxy_id": added[1].ID})))
	require.Len(t, e.listAll("px"), 7)
	require.Equal(t, counts{Total: 7, Active: 6, Available: 6}, countsOf(e.stats("px")))
}

func TestProxiesUpdateKeepsConcurrentLeases(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	e.createPool("cc")
	px := e.addProxies("cc", map[string]any{"host": "h", "port": 1, "max_concurrency": 1000})[0]

	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var leases []model.Lease
	errs := make(chan error, 4*n)
	request := func(op string, body any) ([]byte, error) {
		data, _ := json.Marshal(body)
		msg, err := e.nc.Request("pharox."+op, data, requestTimeout)
		if err != nil {
			return nil, err
		}
		if c := msg.Header.Get(micro.ErrorCodeHeader); c != "" {
			return nil, fmt.Errorf("%s: %s %s", op, c, msg.Data)
		}
		_, rep, _ := schemas.Operation(op)
		if err := e.sch.Validate(rep, msg.Data); err != nil {
			return nil, err
		}
		return msg.Data, nil
	}
	cities := []string{"Lima", "Quito", "Bogota"}
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			data, err := request("acquire", map[string]any{"pool_name": "cc", "consumer_name": fmt.Sprintf("c%d", i%4)})
			if err != nil {
				errs <- err
				return
			}
			var rep model.AcquireReply
			if err := json.Unmarshal(data, &rep); err != nil || rep.Lease == nil {
				errs <- fmt.Errorf("acquire %d: %v %s", i, err, data)
				return
			}
			mu.Lock()
			leases = append(leases, *rep.Lease)
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			if _, err := request("admin.proxies.update", map[string]any{"proxy_id": px.ID, "city": cities[i%3], "isp": fmt.Sprintf("isp-%d", i)}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, leases, n)
	got := e.getProxy(px.ID)
	require.Equal(t, n, got.CurrentLeases, "no lease lost to a concurrent update")
	require.Contains(t, cities, *got.City)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1, Leased: 1, Leases: n}, countsOf(e.stats("cc")))
	tokens := map[uint64]bool{}
	for _, l := range leases {
		require.False(t, tokens[l.FencingToken], "fencing token %d given twice", l.FencingToken)
		tokens[l.FencingToken] = true
		require.Equal(t, model.LeaseActive, e.getLease(l.ID).Status)
	}

	// Release everything while updates go on: every release counted once.
	errs = make(chan error, 4*n)
	for i, l := range leases {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := request("release", map[string]any{"lease_id": l.ID}); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := request("admin.proxies.update", map[string]any{"proxy_id": px.ID, "max_concurrency": 1000 + i}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1}, countsOf(e.stats("cc")))
	require.Len(t, e.events(model.EventReleased), n)
	require.Len(t, e.events(model.EventAcquired), n)
}

func TestConsumers(t *testing.T) {
	e := newEnv(t, envConfig{})
	var a1, a2 model.Consumer
	e.okInto("admin.consumers.ensure", map[string]any{"name": "alice"}, &a1)
	e.okInto("admin.consumers.ensure", map[string]any{"name": "alice"}, &a2)
	require.Equal(t, a1, a2, "same id on every call")
	require.Equal(t, "alice", a1.Name)

	e.createPool("co")
	e.addProxies("co", map[string]any{"host": "h", "port": 1})
	l, _ := e.mustAcquire(map[string]any{"pool_name": "co", "consumer_name": "bob"})
	l2, _ := e.mustAcquire(map[string]any{"pool_name": "co", "consumer_name": "alice"})
	require.Equal(t, a1.ID, l2.ConsumerID)

	var list model.ConsumersReply
	e.okInto("admin.consumers.list", "{}", &list)
	require.Len(t, list.Consumers, 2)
	byName := map[string]string{}
	for _, c := range list.Consumers {
		byName[c.Name] = c.ID
	}
	require.Equal(t, a1.ID, byName["alice"])
	require.Equal(t, l.ConsumerID, byName["bob"], "consumers are registered on first use")

	// A second worker sees the same ids.
	w2 := startWorker(t, e.srv, workertest.Config{Prefix: "other", Clock: e.clock.Now})
	c, err := w2.Manager.EnsureConsumer(t.Context(), "alice")
	require.NoError(t, err)
	require.Equal(t, a1, c)
}

func TestHealthApply(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("hp")
	ps := e.addProxies("hp", map[string]any{"host": "a", "port": 1}, map[string]any{"host": "b", "port": 2})
	var p model.Proxy
	e.okInto("admin.health.apply", map[string]any{"proxy_id": ps[0].ID, "status": "banned", "latency_ms": 12.5,
		"protocol": "http", "status_code": 403, "error_message": "blocked"}, &p)
	require.Equal(t, model.ProxyBanned, p.Status)
	require.NotNil(t, p.CheckedAt)
	require.Equal(t, e.clock.Now(), *p.CheckedAt)
	require.Equal(t, p, e.getProxy(ps[0].ID))

	hev := e.events(model.EventHealth)
	require.Len(t, hev, 1)
	h := decodeEvents[model.HealthEvent](t, e.sch, hev)[0]
	require.Equal(t, ps[0].ID, h.ProxyID)
	require.Equal(t, "hp", h.PoolName)
	require.Equal(t, model.ProxyActive, h.PreviousStatus)
	require.Equal(t, model.ProxyBanned, h.Result.Status)
	require.Equal(t, 12.5, h.Result.LatencyMs)
	require.Equal(t, 1, h.Result.Attempts)
	require.Equal(t, 403, *h.Result.StatusCode)
	require.Equal(t, "blocked", *h.Result.ErrorMessage)
	require.Equal(t, ps[0].ID, h.Result.ProxyID)

	// A banned proxy is not leased.
	_, got := e.mustAcquire(map[string]any{"pool_name": "hp"})
	require.Equal(t, ps[1].ID, got.ID)

	// checked_at with an offset comes back in UTC.
	e.okInto("admin.health.apply", map[string]any{"proxy_id": ps[0].ID, "status": "slow", "latency_ms": 2500,
		"protocol": "socks5", "attempts": 3, "checked_at": "2030-01-02T03:04:05+02:00"}, &p)
	require.Equal(t, model.ProxySlow, p.Status)
	raw := e.ok("admin.proxies.get", map[string]any{"proxy_id": ps[0].ID})
	require.Equal(t, `"2030-01-02T01:04:05Z"`, string(rawField(t, raw, "checked_at")))
	hev = e.events(model.EventHealth)
	require.Len(t, hev, 2)
	h = decodeEvents[model.HealthEvent](t, e.sch, hev)[1]
	require.Equal(t, model.ProxyBanned, h.PreviousStatus)
	require.Equal(t, 3, h.Result.Attempts)
	require.Equal(t, model.ProtocolSOCKS5, h.Result.Protocol)
	require.Nil(t, h.Result.StatusCode)
	require.Contains(t, string(hev[1].Data), `"checked_at":"2030-01-02T01:04:05Z"`)

	e.failWellFormed("admin.health.apply", map[string]any{"proxy_id": uuid.NewString(), "status": "active", "latency_ms": 1, "protocol": "http"}, 404, "proxy_not_found")
	det := e.fail("admin.health.apply", map[string]any{"proxy_id": ps[0].ID, "status": "dead", "latency_ms": 1, "protocol": "http"}, 400, "bad_request")
	require.Contains(t, det.Message, "status")
	require.Equal(t, model.ProxySlow, e.getProxy(ps[0].ID).Status)
}

// --- error codes -----------------------------------------------------------

func TestErrorCodes(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("err")
	px := e.addProxies("err", map[string]any{"host": "h", "port": 1, "max_concurrency": 1})[0]
	lease, _ := e.mustAcquire(map[string]any{"pool_name": "err", "consumer_name": "owner"})

	type tc struct {
		name     string
		op       string
		body     string
		status   int
		code     string
		contains []string
	}
	big := `{"pool_name":"err"}` + strings.Repeat(" ", broker.MaxBody)
	cases := []tc{
		{"malformed JSON", "acquire", `{"pool_name":`, 400, "bad_request", []string{"malformed JSON"}},
		{"wrong type", "acquire", `{"pool_name":"err","duration_seconds":"60"}`, 400, "bad_request", []string{"duration_seconds"}},
		{"unknown field pool", "acquire", `{"pool":"err"}`, 400, "bad_request", []string{`"pool"`}},
		{"unknown nested field", "acquire", `{"pool_name":"err","filters":{"contry":"AR"}}`, 400, "bad_request", []string{"contry"}},
		{"unknown field in update", "admin.proxies.update", `{"proxy_id":"` + px.ID + `","hots":"x"}`, 400, "bad_request", []string{"hots"}},
		{"unknown credentials field", "admin.proxies.update", `{"proxy_id":"` + px.ID + `","credentials":{"usr":"a","password":"b"}}`, 400, "bad_request", []string{"usr"}},
		{"unknown health option", "admin.pools.update", `{"name":"err","health_check":{"enabled":true,"interval_seconds":1,"failure_threshold":1,"options":{"target_url":"http://x","retries":2}}}`, 400, "bad_request", []string{"retries"}},
		{"selector enum", "acquire", `{"pool_name":"err","selector":"fastest"}`, 400, "bad_request", []string{"selector", "fastest"}},
		{"protocol enum", "admin.proxies.add", `{"pool_name":"err","proxies":[{"host":"h","port":2,"protocol":"ftp"}]}`, 400, "bad_request", []string{"protocol", "ftp"}},
		{"status enum add", "admin.proxies.add", `{"pool_name":"err","proxies":[{"host":"h","port":2,"status":"dead"}]}`, 400, "bad_request", []string{"status", "dead"}},
		{"status enum list", "admin.proxies.list", `{"pool_name":"err","status":"dead"}`, 400, "bad_request", []string{"status", "dead"}},
		{"status enum update", "admin.proxies.update", `{"proxy_id":"` + px.ID + `","status":"dead"}`, 400, "bad_request", []string{"status", "dead"}},
		{"protocol enum update", "admin.proxies.update", `{"proxy_id":"` + px.ID + `","protocol":"gopher"}`, 400, "bad_request", []string{"protocol", "gopher"}},
		{"protocol enum health", "admin.health.apply", `{"proxy_id":"` + px.ID + `","status":"active","latency_ms":1,"protocol":"ftp"}`, 400, "bad_request", []string{"protocol"}},
		{"invalid filters", "acquire", `{"pool_name":"err","filters":{"radius_km":10}}`, 400, "bad_request", []string{"radius_km"}},
		{"forbidden", "release", `{"lease_id":"` + lease.ID + `","consumer_name":"thief"}`, 403, "forbidden", []string{"thief"}},
		{"pool_not_found", "stats", `{"pool_name":"latam"}`, 404, "pool_not_found", []string{`pool "latam" does not exist`}},
		{"lease_not_found", "leases.get", `{"lease_id":"` + uuid.NewString() + `"}`, 404, "lease_not_found", nil},
		{"proxy_not_found", "admin.proxies.get", `{"proxy_id":"` + uuid.NewString() + `"}`, 404, "proxy_not_found", nil},
		{"conflict create", "admin.pools.create", `{"name":"err"}`, 409, "conflict", []string{"err"}},
		{"conflict delete pool", "admin.pools.delete", `{"name":"err"}`, 409, "conflict", nil},
		{"conflict delete proxy", "admin.proxies.delete", `{"proxy_id":"` + px.ID + `"}`, 409, "conflict", nil},
		{"payload_too_large", "stats", big, 413, "payload_too_large", []string{fmt.Sprint(broker.MaxBody)}},
		{"payload_too_large add", "admin.proxies.add", `{"pool_name":"err","proxies":[{"host":"h","port":2}]}` + strings.Repeat(" ", broker.MaxProxiesBody), 413, "payload_too_large", []string{fmt.Sprint(broker.MaxProxiesBody)}},
	}
	before := e.snapshot([]string{"err"}, []string{lease.ID})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			det := e.fail(c.op, c.body, c.status, c.code)
			for _, s := range c.contains {
				require.Contains(t, det.Message, s)
			}
			if c.status == 403 || c.status == 404 || c.status == 409 {
				e.requireValidRequest(c.op, []byte(c.body))
			} else if c.status == 400 {
				e.requireInvalidRequest(c.op, []byte(c.body))
			}
		})
	}
	require.Equal(t, before, e.snapshot([]string{"err"}, []string{lease.ID}), "failed requests changed nothing")
}

// TestUnavailable reaches 503 two ways: a worker whose request deadline has
// always passed (every store call gives up before anything is sent, so
// nothing can have changed, which a healthy worker then checks), and a real
// outage, JetStream shut down on the server.
func TestUnavailable(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("un")
	px := e.addProxies("un", map[string]any{"host": "h", "port": 1})[0]
	lease, _ := e.mustAcquire(map[string]any{"pool_name": "un"})

	// The same manager behind a second prefix, with a deadline that has
	// always passed.
	lnc := natstest.Connect(t, e.srv)
	late, err := broker.Start(lnc, e.workers[0].Manager, broker.WithPrefix("late"), broker.WithExpiredDeadline())
	require.NoError(t, err)
	t.Cleanup(func() { _ = late.Stop(context.Background()) })
	require.NoError(t, lnc.Flush())
	before := e.snapshot([]string{"un"}, []string{lease.ID})
	for _, c := range []struct{ op, body string }{
		{"acquire", `{"pool_name":"un","consumer_name":"newcomer"}`},
		{"release", `{"lease_id":"` + lease.ID + `"}`},
		{"renew", `{"lease_id":"` + lease.ID + `","duration_seconds":600}`},
		{"leases.get", `{"lease_id":"` + lease.ID + `"}`},
		{"stats", `{"pool_name":"un"}`},
		{"admin.pools.create", `{"name":"fresh"}`},
		{"admin.pools.list", `{}`},
		{"admin.pools.update", `{"name":"un","description":"changed"}`},
		{"admin.pools.delete", `{"name":"un","force":true}`},
		{"admin.proxies.add", `{"pool_name":"un","proxies":[{"host":"h2","port":2}]}`},
		{"admin.proxies.list", `{"pool_name":"un"}`},
		{"admin.proxies.get", `{"proxy_id":"` + px.ID + `"}`},
		{"admin.proxies.update", `{"proxy_id":"` + px.ID + `","city":"changed"}`},
		{"admin.proxies.delete", `{"proxy_id":"` + px.ID + `","force":true}`},
		{"admin.consumers.ensure", `{"name":"newcomer"}`},
		{"admin.consumers.list", `{}`},
		{"admin.health.apply", `{"proxy_id":"` + px.ID + `","status":"banned","latency_ms":1,"protocol":"http"}`},
	} {
		e.requireValidRequest(c.op, []byte(c.body))
		msg, err := e.nc.Request("late."+c.op, []byte(c.body), requestTimeout)
		require.NoError(t, err, c.op)
		requireErrorReply(t, e.sch, msg, 503, "unavailable")
	}
	require.Equal(t, before, e.snapshot([]string{"un"}, []string{lease.ID}), "503 changed nothing")

	// A real outage: JetStream goes away under the worker.
	t.Run("jetstream down", func(t *testing.T) {
		e := newEnv(t, envConfig{cfg: workertest.Config{RequestTimeout: 300 * time.Millisecond}})
		e.createPool("down")
		e.addProxies("down", map[string]any{"host": "h", "port": 1})
		e.skipStreamCheck = true
		require.NoError(t, e.srv.DisableJetStream())
		for _, c := range []struct{ op, body string }{
			{"acquire", `{"pool_name":"down"}`},
			{"stats", `{"pool_name":"down"}`},
			{"admin.pools.create", `{"name":"other"}`},
		} {
			det := e.failRaw(c.op, []byte(c.body), 503, "unavailable")
			require.NotEmpty(t, det.Message)
		}
		// Nothing was published for the failed acquire.
		e.drainEvents()
		require.Empty(t, e.evs)
	})
}

// TestEventsStream checks the stream's settings and that subscribers can
// replay it: each event stored once, in order, with its Nats-Msg-Id.
func TestEventsStream(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	e.createPool("es")
	e.addProxies("es", map[string]any{"host": "h", "port": 1})
	var ids []string
	for i := 0; i < 6; i++ {
		l, _ := e.mustAcquire(map[string]any{"pool_name": "es", "duration_seconds": 10})
		ids = append(ids, l.ID)
	}
	for _, id := range ids[:3] {
		e.release(id)
	}
	e.clock.Advance(11 * time.Second)
	require.Equal(t, 3, cleanup(e))
	e.syncEvents()
	stored := e.streamEvents(t)
	require.Len(t, stored, 12)
	bySubject := map[string]int{}
	msgIDs := map[string]bool{}
	for _, m := range stored {
		bySubject[m.Subject]++
		id := m.Header.Get(nats.MsgIdHdr)
		require.NotEmpty(t, id)
		require.False(t, msgIDs[id])
		msgIDs[id] = true
		name, ok := schemas.Event(strings.TrimPrefix(m.Subject, "pharox.events."))
		require.True(t, ok)
		require.NoError(t, e.sch.Validate(name, m.Data))
	}
	require.Equal(t, map[string]int{"pharox.events.acquired": 6, "pharox.events.released": 3, "pharox.events.expired": 3}, bySubject)
	// Expired events name exactly the leases not released.
	var expired []string
	for _, m := range stored {
		if m.Subject == "pharox.events.expired" {
			var ev model.ExpiredEvent
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			expired = append(expired, ev.Lease.ID)
		}
	}
	sort.Strings(expired)
	rest := append([]string(nil), ids[3:]...)
	sort.Strings(rest)
	require.Equal(t, rest, expired)
}

func TestAcquireRequestIDIdempotent(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("rid")
	px := e.addProxies("rid", map[string]any{"host": "h", "port": 1})[0]
	req := map[string]any{"pool_name": "rid", "consumer_name": "c", "request_id": "job-1"}
	l1, _ := e.mustAcquire(req)
	l2, _ := e.mustAcquire(req)
	require.Equal(t, l1.ID, l2.ID, "a repeated request_id returns the same lease")
	require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)
	// Scoped to the consumer.
	other, _ := e.mustAcquire(map[string]any{"pool_name": "rid", "consumer_name": "d", "request_id": "job-1"})
	require.NotEqual(t, l1.ID, other.ID)
	// Once the lease ended, the key starts a new one.
	e.release(l1.ID)
	l3, _ := e.mustAcquire(req)
	require.NotEqual(t, l1.ID, l3.ID)
}

func TestAcquireWaitSeconds(t *testing.T) {
	// Waits are wall-clock time: the real clock.
	e := newEnv(t, envConfig{realClock: true})
	e.createPool("wait")
	e.addProxies("wait", map[string]any{"host": "h", "port": 1, "max_concurrency": 1})
	held, _ := e.mustAcquire(map[string]any{"pool_name": "wait"})
	released := make(chan *nats.Msg, 1)
	w := e.workers[0]
	sleeps := w.Manager.Counters().Sleeps
	go func() {
		// Released once the acquire below is asleep waiting (a barrier,
		// not a pause).
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for w.Manager.Waiters() != 1 || w.Manager.Counters().Sleeps <= sleeps {
			<-tick.C
		}
		data, _ := json.Marshal(map[string]any{"lease_id": held.ID})
		msg, _ := e.nc.Request("pharox.release", data, requestTimeout)
		released <- msg
	}()
	start := time.Now()
	rep := e.acquire(map[string]any{"pool_name": "wait", "wait_seconds": 10})
	require.NotNil(t, rep.Lease, "a release within wait_seconds frees the proxy for the waiting acquire")
	require.Less(t, time.Since(start), 5*time.Second)
	msg := <-released
	require.NotNil(t, msg)
	require.NoError(t, e.sch.Validate("lease.reply", msg.Data))
	// With nothing released, the wait ends empty after wait_seconds.
	start = time.Now()
	rep = e.acquire(map[string]any{"pool_name": "wait", "wait_seconds": 0.5})
	require.Nil(t, rep.Lease)
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
}

// TestConcurrentErrorReplies: error replies are sent from the broker's own
// goroutines while micro keeps serving the endpoint; under -race this
// catches any write to the shared micro request (req.Error did one).
func TestConcurrentErrorReplies(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("ce")
	// Keep micro's service lock busy: micro takes it after each handler
	// returns, which lets the reply goroutines finish first and makes a
	// write to the request visible to the race detector.
	stop := make(chan struct{})
	infoDone := make(chan struct{})
	go func() {
		defer close(infoDone)
		for {
			select {
			case <-stop:
				return
			default:
				_ = e.workers[0].Broker.Info()
			}
		}
	}()
	defer func() { close(stop); <-infoDone }()
	const n = 256
	var wg sync.WaitGroup
	msgs := make([]*nats.Msg, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := `{"pool_name":"ce","bogus_` + fmt.Sprint(i) + `":1}`
			if i%2 == 1 {
				body = `{"pool_name":"missing-` + fmt.Sprint(i) + `"}`
			}
			msgs[i], errs[i] = e.nc.Request("pharox.stats", []byte(body), requestTimeout)
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		if i%2 == 0 {
			det := requireErrorReply(t, e.sch, msgs[i], 400, "bad_request")
			require.Contains(t, det.Message, fmt.Sprintf(`"bogus_%d"`, i))
		} else {
			det := requireErrorReply(t, e.sch, msgs[i], 404, "pool_not_found")
			require.Contains(t, det.Message, fmt.Sprintf(`"missing-%d"`, i))
		}
	}
}
