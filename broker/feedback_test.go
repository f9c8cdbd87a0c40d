package broker_test

// Contract tests of the v1.1 additions (PROTOCOL.md "v1.1 additions"),
// sentence by sentence, through NATS to two workers sharing the store.
// Time is the store's injectable clock (workertest.Clock), moved by hand:
// a cooldown ends with no write, when the clock passes it.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

var allSelectors = []string{"first_available", "least_used", "round_robin", "random", "lowest_latency"}

// releaseWith releases a lease reporting an outcome ("" for none).
func (e *env) releaseWith(leaseID, outcome, reason string) model.Lease {
	e.t.Helper()
	req := map[string]any{"lease_id": leaseID}
	if outcome != "" {
		req["outcome"] = outcome
	}
	if reason != "" {
		req["reason"] = reason
	}
	var rep model.LeaseReply
	e.okInto("release", req, &rep)
	require.NotNil(e.t, rep.Lease)
	return *rep.Lease
}

// requireNotEligible: no acquire, by any selector, with or without a filter
// the proxy matches, gets a lease from the pool.
func (e *env) requireNotEligible(pool string, filters map[string]any, why string) {
	e.t.Helper()
	for _, sel := range allSelectors {
		for _, f := range []map[string]any{nil, filters} {
			req := map[string]any{"pool_name": pool, "consumer_name": "probe", "duration_seconds": 60, "selector": sel}
			if f != nil {
				req["filters"] = f
			}
			rep := e.acquire(req)
			require.Nil(e.t, rep.Lease, "%s: %s with filters %v leased %+v", why, sel, f, rep.Proxy)
		}
	}
}

// settled waits until every worker's replica has the pool settings
// acknowledged so far: a release judges a failure by the pool's cooldown as
// the deciding worker's replica has it (README: behaviour where the
// contract is silent).
func (e *env) settled(pool string) {
	e.t.Helper()
	for _, w := range e.workers {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		_, err := w.Manager.PoolStats(ctx, pool)
		cancel()
		require.NoError(e.t, err)
	}
}

func sameInstant(t testing.TB, want time.Time, got *time.Time, msg string) {
	t.Helper()
	require.NotNil(t, got, msg)
	require.True(t, want.Equal(*got), "%s: want %s, got %s", msg, want, got)
}

// committedEvents returns the captured events named name in the order
// their writes committed. Two workers publish on their own, and the
// contract gives no order across workers (PROTOCOL.md, Events: Order), so
// the capture's order is not the order of the requests; the Nats-Msg-Id of
// an event a write caused names that write's stream sequence and the
// event's place among its events, which is. Only events of writes to one
// stream can be ordered so.
func (e *env) committedEvents(name string) []*nats.Msg {
	e.t.Helper()
	type key struct {
		stream   string
		seq, pos uint64
	}
	keys := map[*nats.Msg]key{}
	msgs := e.events(name)
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		parts := strings.Split(id, ":")
		require.Len(e.t, parts, 3, "%s of %s: not of a committed write", jetstream.MsgIDHeader, id)
		seq, err := strconv.ParseUint(parts[1], 10, 64)
		require.NoError(e.t, err, id)
		pos, err := strconv.ParseUint(parts[2], 10, 64)
		require.NoError(e.t, err, id)
		keys[m] = key{parts[0], seq, pos}
		require.Equal(e.t, keys[msgs[0]].stream, parts[0], "events of writes to different streams have no commit order")
	}
	slices.SortFunc(msgs, func(a, b *nats.Msg) int {
		return cmp.Or(cmp.Compare(keys[a].seq, keys[b].seq), cmp.Compare(keys[a].pos, keys[b].pos))
	})
	return msgs
}

func TestFeedbackCooldownBackoff(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	var pool model.ProxyPool
	e.okInto("admin.pools.create", map[string]any{"name": "fb", "cooldown": map[string]any{"failures": 3, "seconds": 1, "max_seconds": 4}}, &pool)
	require.Equal(t, &model.Cooldown{Failures: 3, Seconds: 1, MaxSeconds: 4}, pool.Cooldown)
	e.settled("fb")
	px := e.addProxies("fb", map[string]any{"host": "10.9.0.1", "port": 8080, "protocol": "socks5", "country": "AR"})[0]
	require.Zero(t, px.ConsecutiveFailures)
	require.Nil(t, px.CooldownUntil)
	require.Nil(t, px.LatencyMs)
	acq := map[string]any{"pool_name": "fb", "consumer_name": "crawler", "duration_seconds": 600}
	matching := map[string]any{"country": "AR", "protocol": "socks5"}

	t.Run("backoff sequence", func(t *testing.T) {
		// failures 3, seconds 1, max 4: the 3rd failure cools 1 s, the 4th
		// 2 s, the 5th 4 s, the 6th 4 s.
		for i, d := range []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
			n := i + 1
			l, _ := e.mustAcquire(acq)
			at := e.clock.Now()
			rel := e.releaseWith(l.ID, "failure", fmt.Sprintf("failure %d: HTTP 403", n))
			require.Equal(t, model.LeaseReleased, rel.Status)
			p := e.getProxy(px.ID)
			require.Equal(t, n, p.ConsecutiveFailures, "failure %d counted once", n)
			if d == 0 {
				require.Nil(t, p.CooldownUntil, "failure %d is below the threshold", n)
				continue
			}
			sameInstant(t, at.Add(d), p.CooldownUntil, fmt.Sprintf("failure %d cools down for %s", n, d))
			e.requireNotEligible("fb", matching, fmt.Sprintf("cooling after failure %d", n))
			st := e.stats("fb")
			require.Equal(t, counts{Total: 1, Active: 1}, countsOf(st))
			require.Equal(t, 1, st.CoolingProxies)

			e.clock.Advance(d - time.Millisecond)
			e.requireNotEligible("fb", matching, fmt.Sprintf("a millisecond before the end of cooldown %d", n))
			e.clock.Advance(time.Millisecond)
			// Eligible again at cooldown_until, with no write: the next
			// round's acquire gets it. The count is kept.
			st = e.stats("fb")
			require.Zero(t, st.CoolingProxies)
			require.Equal(t, 1, st.AvailableProxies)
			require.Equal(t, n, e.getProxy(px.ID).ConsecutiveFailures)
		}
		cool := decodeEvents[model.CooldownEvent](t, e.sch, e.committedEvents(model.EventCooldown))
		require.Len(t, cool, 4, "one cooldown event per failure that set cooldown_until")
		for i, ev := range cool {
			require.Equal(t, px.ID, ev.ProxyID)
			require.Equal(t, "fb", ev.PoolName)
			require.Equal(t, i+3, ev.ConsecutiveFailures)
			require.Equal(t, fmt.Sprintf("failure %d: HTTP 403", i+3), *ev.Reason)
		}
		rels := decodeEvents[model.ReleaseEvent](t, e.sch, e.committedEvents(model.EventReleased))
		require.Len(t, rels, 6)
		for i, ev := range rels {
			require.Equal(t, model.OutcomeFailure, *ev.Outcome)
			require.Equal(t, fmt.Sprintf("failure %d: HTTP 403", i+1), *ev.Reason)
		}
	})

	t.Run("success resets, a running cooldown stays", func(t *testing.T) {
		a, _ := e.mustAcquire(acq)
		b, _ := e.mustAcquire(acq)
		at := e.clock.Now()
		e.releaseWith(a.ID, "failure", "")
		p := e.getProxy(px.ID)
		require.Equal(t, 7, p.ConsecutiveFailures)
		sameInstant(t, at.Add(4*time.Second), p.CooldownUntil, "capped at max_seconds")
		e.releaseWith(b.ID, "success", "")
		p = e.getProxy(px.ID)
		require.Zero(t, p.ConsecutiveFailures, "a success resets the count")
		sameInstant(t, at.Add(4*time.Second), p.CooldownUntil, "a success leaves the cooldown running")
		e.requireNotEligible("fb", matching, "cooling after a success")
		e.clock.Advance(4 * time.Second)
		l, _ := e.mustAcquire(acq)
		e.releaseWith(l.ID, "failure", "")
		p = e.getProxy(px.ID)
		require.Equal(t, 1, p.ConsecutiveFailures)
		sameInstant(t, at.Add(4*time.Second), p.CooldownUntil, "below the threshold again: no new cooldown")
		ev := decodeEvents[model.CooldownEvent](t, e.sch, e.committedEvents(model.EventCooldown))
		require.Len(t, ev, 5)
		require.Nil(t, ev[4].Reason, "no reason given: null")
		rels := decodeEvents[model.ReleaseEvent](t, e.sch, e.committedEvents(model.EventReleased))
		require.Equal(t, model.OutcomeSuccess, *rels[7].Outcome)
		require.Nil(t, rels[7].Reason)
	})

	t.Run("a later cooldown is kept", func(t *testing.T) {
		l, _ := e.mustAcquire(acq)
		later := e.clock.Now().Add(time.Hour)
		var p model.Proxy
		e.okInto("admin.proxies.update", map[string]any{"proxy_id": px.ID, "consecutive_failures": 5,
			"cooldown_until": later.In(time.FixedZone("ART", -3*3600)).Format(time.RFC3339Nano)}, &p)
		require.Equal(t, 5, p.ConsecutiveFailures)
		sameInstant(t, later, p.CooldownUntil, "set by admin.proxies.update")
		require.Equal(t, time.UTC, p.CooldownUntil.Location())
		before := len(e.events(model.EventCooldown))
		e.releaseWith(l.ID, "failure", "")
		p = e.getProxy(px.ID)
		require.Equal(t, 6, p.ConsecutiveFailures)
		sameInstant(t, later, p.CooldownUntil, "now + 4 s is before the cooldown set: kept")
		require.Len(t, e.events(model.EventCooldown), before, "a failure that does not move cooldown_until publishes no cooldown event")

		// null ends a cooldown at once.
		e.okInto("admin.proxies.update", map[string]any{"proxy_id": px.ID, "cooldown_until": nil}, &p)
		require.Nil(t, p.CooldownUntil)
		require.Equal(t, 6, p.ConsecutiveFailures)
		require.Equal(t, 1, e.stats("fb").AvailableProxies)
		l2, _ := e.mustAcquire(acq)
		e.releaseWith(l2.ID, "success", "")
	})

	t.Run("a release that changes nothing records nothing", func(t *testing.T) {
		l, _ := e.mustAcquire(acq)
		e.releaseWith(l.ID, "success", "")
		require.Zero(t, e.getProxy(px.ID).ConsecutiveFailures)
		released := len(e.events(model.EventReleased))
		for i := 0; i < 3; i++ {
			again := e.releaseWith(l.ID, "failure", "repeated")
			require.Equal(t, model.LeaseReleased, again.Status)
		}
		require.Zero(t, e.getProxy(px.ID).ConsecutiveFailures, "an already released lease records nothing")

		short, _ := e.mustAcquire(map[string]any{"pool_name": "fb", "duration_seconds": 1})
		e.clock.Advance(2 * time.Second)
		exp := e.releaseWith(short.ID, "failure", "too late")
		require.Equal(t, model.LeaseExpired, exp.Status)
		p := e.getProxy(px.ID)
		require.Zero(t, p.ConsecutiveFailures, "an expired lease records nothing")
		require.Nil(t, p.CooldownUntil)
		require.Len(t, e.events(model.EventReleased), released, "no released event either")

		// A release without outcome leaves the count alone.
		l, _ = e.mustAcquire(acq)
		l2, _ := e.mustAcquire(acq)
		e.releaseWith(l.ID, "failure", "")
		e.releaseWith(l2.ID, "", "")
		require.Equal(t, 1, e.getProxy(px.ID).ConsecutiveFailures)
		rels := decodeEvents[model.ReleaseEvent](t, e.sch, e.committedEvents(model.EventReleased))
		last := rels[len(rels)-1]
		require.Nil(t, last.Outcome)
		require.Nil(t, last.Reason)
		var raw map[string]json.RawMessage
		evs := e.committedEvents(model.EventReleased)
		require.NoError(t, json.Unmarshal(evs[len(evs)-1].Data, &raw))
		require.JSONEq(t, "null", string(raw["outcome"]), "outcome is null when not given")
		require.JSONEq(t, "null", string(raw["reason"]))
	})

	t.Run("cooldown null turns it off; inactive proxies do not count as cooling", func(t *testing.T) {
		e.okInto("admin.pools.update", map[string]any{"name": "fb", "cooldown": nil}, &pool)
		require.Nil(t, pool.Cooldown)
		e.settled("fb")
		for i := 0; i < 5; i++ {
			l, _ := e.mustAcquire(acq)
			e.releaseWith(l.ID, "failure", "")
		}
		p := e.getProxy(px.ID)
		require.Equal(t, 6, p.ConsecutiveFailures)
		require.Nil(t, p.CooldownUntil, "no cooldown without the pool setting")
		require.Equal(t, 1, e.stats("fb").AvailableProxies)

		e.okInto("admin.pools.update", map[string]any{"name": "fb", "cooldown": map[string]any{"failures": 1, "seconds": 60, "max_seconds": 60}}, &pool)
		e.settled("fb")
		l, _ := e.mustAcquire(acq)
		e.releaseWith(l.ID, "failure", "")
		require.Equal(t, 1, e.stats("fb").CoolingProxies, "the new setting applies to the next failure")
		e.okInto("admin.proxies.update", map[string]any{"proxy_id": px.ID, "status": "inactive"}, &p)
		st := e.stats("fb")
		require.Zero(t, st.CoolingProxies, "cooling_proxies counts active proxies only")
		require.Zero(t, st.ActiveProxies)
	})
}

func TestFeedbackWaiterWokenByCooldownEnd(t *testing.T) {
	// Real time: a waiter sleeps on real timers, and the cooldown's end is
	// a moment with no write.
	e := newEnv(t, envConfig{workers: 2, realClock: true})
	e.ok("admin.pools.create", map[string]any{"name": "fw", "cooldown": map[string]any{"failures": 1, "seconds": 1, "max_seconds": 1}})
	px := e.addProxies("fw", map[string]any{"host": "10.9.1.1", "port": 8080, "max_concurrency": 1})[0]
	l, _ := e.mustAcquire(map[string]any{"pool_name": "fw", "duration_seconds": 60})
	e.releaseWith(l.ID, "failure", "blocked")
	until := e.getProxy(px.ID).CooldownUntil
	require.NotNil(t, until)
	e.ok("admin.consumers.ensure", map[string]any{"name": "waiter"})
	r := timedRequest(e.nc, "pharox.acquire", body(t, map[string]any{"pool_name": "fw", "consumer_name": "waiter", "duration_seconds": 60, "wait_seconds": 8}), requestTimeout)
	got := requireAcquireReply(t, e, r, "waiter on a cooling proxy")
	require.NotNil(t, got, "the cooldown's end wakes the waiter: %s", r.msg.Data)
	require.Equal(t, px.ID, got.ProxyID)
	late := r.got.Sub(*until)
	t.Logf("waiter served %v after cooldown_until (sent %v before it)", late, until.Sub(r.sent))
	require.GreaterOrEqual(t, late, -10*time.Millisecond, "not before the cooldown ends")
	require.Less(t, r.took(), 6*time.Second, "woken by the cooldown's end, not by its own deadline")
}

func TestLowestLatencyAndHealthLast(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	e.createPool("ll")
	one := func(host string) map[string]any {
		return map[string]any{"host": host, "port": 8080, "max_concurrency": 1}
	}
	ps := e.addProxies("ll", one("10.8.0.1"), one("10.8.0.2"), one("10.8.0.3"), one("10.8.0.4"), one("10.8.0.5"))
	apply := func(id string, ms float64, extra map[string]any) model.Proxy {
		req := map[string]any{"proxy_id": id, "status": "active", "latency_ms": ms, "protocol": "http"}
		for k, v := range extra {
			req[k] = v
		}
		var p model.Proxy
		e.okInto("admin.health.apply", req, &p)
		require.NotNil(t, p.LatencyMs)
		require.Equal(t, ms, *p.LatencyMs)
		return p
	}
	// ps[0] and ps[3] are never measured.
	apply(ps[1].ID, 300, nil)
	apply(ps[2].ID, 900, nil)
	apply(ps[2].ID, 20, map[string]any{"status_code": 200, "checked_at": "2026-01-02T03:04:05.5+01:00"}) // the last result counts
	apply(ps[4].ID, 20, map[string]any{"attempts": 3, "error_message": "slow start"})                    // a tie: added order

	var order []string
	for range ps {
		l, _ := e.mustAcquire(map[string]any{"pool_name": "ll", "selector": "lowest_latency", "duration_seconds": 60})
		order = append(order, l.ProxyID)
	}
	require.Equal(t, []string{ps[2].ID, ps[4].ID, ps[1].ID, ps[0].ID, ps[3].ID}, order,
		"smallest latency_ms first, ties and the never measured in added order")

	var last model.HealthLastReply
	e.okInto("admin.health.last", map[string]any{"proxy_id": ps[2].ID}, &last)
	require.NotNil(t, last.Result)
	require.Equal(t, model.HealthCheckResult{ProxyID: ps[2].ID, Status: model.ProxyActive, LatencyMs: 20, Protocol: model.ProtocolHTTP,
		Attempts: 1, StatusCode: ptr(200), CheckedAt: time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC)}, *last.Result,
		"attempts defaults to 1")
	e.okInto("admin.health.last", map[string]any{"proxy_id": ps[4].ID}, &last)
	require.Equal(t, 3, last.Result.Attempts)
	require.Equal(t, "slow start", *last.Result.ErrorMessage)
	data := e.ok("admin.health.last", map[string]any{"proxy_id": ps[0].ID})
	require.JSONEq(t, `{"result":null}`, string(data), "never measured")
	e.failWellFormed("admin.health.last", map[string]any{"proxy_id": uuid.NewString()}, 404, "proxy_not_found")
	e.failWellFormed("admin.health.last", map[string]any{"proxy_id": "p-1"}, 404, "proxy_not_found")
}

func TestProtocolFilterAndExclusion(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2})
	e.createPool("pe")
	ps := e.addProxies("pe",
		map[string]any{"host": "10.7.0.1", "port": 1, "protocol": "http", "country": "AR"},
		map[string]any{"host": "10.7.0.2", "port": 2, "protocol": "https", "country": "AR"},
		map[string]any{"host": "10.7.0.3", "port": 3, "protocol": "socks4", "country": "BR"},
		map[string]any{"host": "10.7.0.4", "port": 4, "protocol": "socks5", "country": "AR"},
	)
	pick := func(req map[string]any) string {
		t.Helper()
		req["pool_name"] = "pe"
		req["duration_seconds"] = 60
		rep := e.acquire(req)
		if rep.Lease == nil {
			return ""
		}
		e.release(rep.Lease.ID)
		// The next pick may be decided by the other worker: it must have
		// seen this release, or the proxy looks taken to it.
		e.settled("pe")
		return rep.Lease.ProxyID
	}
	for _, c := range []struct {
		name    string
		filters map[string]any
		matches []int // in added order; the first is what the ordered selectors pick
	}{
		{"one protocol", map[string]any{"protocol": "socks5"}, []int{3}},
		{"a list", map[string]any{"protocol": []string{"socks5", "https"}}, []int{1, 3}},
		{"a list of one", map[string]any{"protocol": []string{"socks4"}}, []int{2}},
		{"with another field", map[string]any{"protocol": []string{"socks4", "socks5"}, "country": "AR"}, []int{3}},
		{"none speak it", map[string]any{"protocol": "socks4", "country": "AR"}, nil},
		{"nested any_of", map[string]any{"any_of": []any{map[string]any{"protocol": "socks4"}, map[string]any{"protocol": "socks5"}}}, []int{2, 3}},
		{"nested none_of", map[string]any{"none_of": []any{map[string]any{"protocol": []string{"http", "https"}}}}, []int{2, 3}},
		{"nested all_of", map[string]any{"all_of": []any{map[string]any{"protocol": []string{"https", "socks5"}}, map[string]any{"none_of": []any{map[string]any{"protocol": "https"}}}}}, []int{3}},
	} {
		for _, sel := range allSelectors {
			got := pick(map[string]any{"filters": c.filters, "selector": sel})
			if len(c.matches) == 0 {
				require.Empty(t, got, "%s, %s", c.name, sel)
				continue
			}
			var allowed []string
			for _, i := range c.matches {
				allowed = append(allowed, ps[i].ID)
			}
			switch sel {
			case "round_robin", "random": // each worker rotates on its own
				require.Contains(t, allowed, got, "%s, %s", c.name, sel)
			default:
				require.Equal(t, allowed[0], got, "%s, %s", c.name, sel)
			}
		}
	}

	// exclude_proxy_ids: never chosen, whatever the selector and filters;
	// an unknown id (any version) is simply never chosen.
	unknownV1 := "2d3e4f5a-6b7c-1d8e-9f0a-1b2c3d4e5f60"
	for _, sel := range allSelectors {
		got := pick(map[string]any{"selector": sel, "exclude_proxy_ids": []string{ps[0].ID, ps[1].ID, ps[2].ID, unknownV1}})
		require.Equal(t, ps[3].ID, got, sel)
		got = pick(map[string]any{"selector": sel, "filters": map[string]any{"country": "AR"},
			"exclude_proxy_ids": []string{ps[0].ID, ps[1].ID, strings.ToUpper(ps[3].ID)}})
		require.Empty(t, got, "%s: every AR proxy excluded", sel)
	}
	got := pick(map[string]any{"exclude_proxy_ids": []string{uuid.NewString(), unknownV1}})
	require.Equal(t, ps[0].ID, got)
	require.Equal(t, counts{Total: 4, Active: 4, Available: 4}, countsOf(e.stats("pe")))

	acquired := decodeEvents[model.AcquireEvent](t, e.sch, e.committedEvents(model.EventAcquired)) // two workers: in commit order
	require.Equal(t, model.Protocols{model.ProtocolSOCKS5}, acquired[0].Filters.Protocol, "events carry the protocol filter")
}

func TestV11DiscoveryAndOldRecords(t *testing.T) {
	e := newEnv(t, envConfig{})
	info := srvReply[micro.Info](t, e.nc, "$SRV.INFO.pharox")
	require.Equal(t, "1.1.0", info.Version, "workers implementing v1.1 say so")

	// Records as the previous version wrote them, with none of the v1.1
	// keys, put straight into the buckets: they read as 0 and null.
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	js, err := jetstream.New(e.nc)
	require.NoError(t, err)
	pools, err := js.KeyValue(ctx, kvstore.PoolsBucket)
	require.NoError(t, err)
	proxies, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	require.NoError(t, err)
	poolID, proxyID := uuid.NewString(), uuid.NewString()
	_, err = pools.Create(ctx, "v10", []byte(`{"id":"`+poolID+`","name":"v10","description":null,"health_check":null,"next_seq":2,"created_at":"2026-01-01T00:00:00Z"}`))
	require.NoError(t, err)
	_, err = proxies.Create(ctx, proxyID, []byte(`{"id":"`+proxyID+`","pool_id":"`+poolID+`","pool_name":"v10","seq":1,"host":"10.6.0.1","port":8080,"protocol":"http","status":"active","checked_at":null,"credentials":null,"source":null,"country":null,"city":null,"latitude":null,"longitude":null,"isp":null,"asn":null,"max_concurrency":1,"holders":[],"nonce":7}`))
	require.NoError(t, err)

	var pl model.PoolsReply
	e.okInto("admin.pools.list", "{}", &pl)
	require.Len(t, pl.Pools, 1)
	require.Nil(t, pl.Pools[0].Cooldown)
	p := e.getProxy(proxyID)
	require.Nil(t, p.LatencyMs)
	require.Zero(t, p.ConsecutiveFailures)
	require.Nil(t, p.CooldownUntil)
	require.Equal(t, 0, e.stats("v10").CoolingProxies)
	for _, sel := range allSelectors {
		l, _ := e.mustAcquire(map[string]any{"pool_name": "v10", "selector": sel, "filters": map[string]any{"protocol": "http"}})
		e.releaseWith(l.ID, "failure", "")
	}
	require.Equal(t, len(allSelectors), e.getProxy(proxyID).ConsecutiveFailures)
	require.JSONEq(t, `{"result":null}`, string(e.ok("admin.health.last", map[string]any{"proxy_id": proxyID})))
}
