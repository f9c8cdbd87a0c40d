package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

// TestLeaserWireForm: what ClientLeaser puts on the wire with the v1.1
// switch off (no v1.1 field, so a v1 worker accepts it; a protocol filter
// is refused before anything is sent) and on. A responder on an embedded
// server records the bodies.
func TestLeaserWireForm(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	var mu sync.Mutex
	bodies := map[string][]map[string]any{}
	for _, op := range []string{"acquire", "release"} {
		_, err := nc.Subscribe("wire."+op, func(m *nats.Msg) {
			var b map[string]any
			_ = json.Unmarshal(m.Data, &b)
			mu.Lock()
			bodies[op] = append(bodies[op], b)
			mu.Unlock()
			_ = m.Respond([]byte(`{"lease":null,"proxy":null}`))
		})
		require.NoError(t, err)
	}
	require.NoError(t, nc.Flush())
	c := client.New(natstest.Connect(t, srv), client.WithPrefix("wire"), client.WithTimeout(5*time.Second))
	country := "AR"
	req := gateway.AcquireRequest{
		AcquireRequest:  model.AcquireRequest{PoolName: "p", Filters: &model.ProxyFilters{Country: &country}},
		ExcludeProxyIDs: []string{"0b7c1f1e-3a7d-4c1e-9f1a-8d2c7b6e5a40"},
	}
	rel := gateway.ReleaseRequest{ReleaseRequest: model.ReleaseRequest{LeaseID: "l"}, Outcome: gateway.OutcomeFailure,
		Reason: strings.Repeat("é", 1100)}
	ctx := context.Background()

	off := gateway.NewClientLeaser(c, gateway.WithContractV11(false))
	_, _, err := off.Acquire(ctx, req)
	require.NoError(t, err)
	require.NoError(t, off.Release(ctx, rel))
	withProto := req
	withProto.Protocols = []model.Protocol{model.ProtocolSOCKS5}
	_, _, err = off.Acquire(ctx, withProto)
	require.ErrorIs(t, err, gateway.ErrNeedsV11)

	on := gateway.NewClientLeaser(c, gateway.WithContractV11(true))
	_, _, err = on.Acquire(ctx, withProto)
	require.NoError(t, err)
	require.NoError(t, on.Release(ctx, rel))

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, bodies["acquire"], 2, "the refused protocol filter sent nothing")
	v1, v11 := bodies["acquire"][0], bodies["acquire"][1]
	require.NotContains(t, v1, "exclude_proxy_ids")
	require.NotContains(t, v1["filters"], "protocol")
	require.Equal(t, "AR", v1["filters"].(map[string]any)["country"])
	require.Equal(t, []any{"0b7c1f1e-3a7d-4c1e-9f1a-8d2c7b6e5a40"}, v11["exclude_proxy_ids"])
	require.Equal(t, []any{"socks5"}, v11["filters"].(map[string]any)["protocol"])
	require.Equal(t, "AR", v11["filters"].(map[string]any)["country"])
	require.Equal(t, "p", v11["pool_name"])

	r1, r11 := bodies["release"][0], bodies["release"][1]
	require.Equal(t, map[string]any{"lease_id": "l"}, r1)
	require.Equal(t, "failure", r11["outcome"])
	require.Len(t, []rune(r11["reason"].(string)), 1024, "reason cut to the contract's 1024 code points")
}

// TestFailureFeedbackWithCooldown: a proxy that fails is released with
// outcome failure, so the pool's cooldown takes it out of rotation, and the
// request goes on through another proxy (exclude_proxy_ids).
// It needs workers that implement contract v1.1 (release outcome/reason,
// acquire exclude_proxy_ids and pool cooldowns), as this repository's do.
func TestFailureFeedbackWithCooldown(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	good := proxytest.HTTP(t, proxytest.HTTPConfig{})
	pxs := e.pool("feedback", 0, deadUpstream(t, model.ProtocolHTTP), up(model.ProtocolHTTP, good, "", ""))
	dead := pxs[0].ID
	// Through client.Call: model has no cooldown field yet.
	require.NoError(t, e.c.Call(e.ctx(), "admin.pools.update", map[string]any{"name": "feedback",
		"cooldown": map[string]int{"failures": 1, "seconds": 60, "max_seconds": 600}}, nil, 0))

	hc := w.httpClient("pool=feedback", token, false, tg)
	code, body, hdr := get(t, hc, tg.http.URL+"/ok")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, pxs[1].ID, hdr.Get(gateway.HeaderProxyID), "went on through the other proxy")

	var failed client.Event
	for _, ev := range e.waitEvents(2, named("released", "feedback")) {
		if ev.Lease().ProxyID == dead {
			failed = ev
		}
	}
	var payload map[string]any
	require.NoError(t, json.Unmarshal(failed.Data, &payload))
	require.Equal(t, "failure", payload["outcome"])
	require.NotEmpty(t, payload["reason"])
	e.waitEvents(1, func(ev client.Event) bool { return ev.Name == "cooldown" })
	var px map[string]any
	require.NoError(t, e.c.Call(e.ctx(), "admin.proxies.get", map[string]string{"proxy_id": dead}, &px, 0))
	require.EqualValues(t, 1, px["consecutive_failures"])
	require.NotNil(t, px["cooldown_until"])

	// Cooling: the next requests never lease it.
	for range 5 {
		code, _, hdr := get(t, hc, tg.http.URL+"/ok")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, pxs[1].ID, hdr.Get(gateway.HeaderProxyID))
	}
	// The first acquire's event may come from the other worker than the
	// release waited for above, and the later ones from either: wait for all.
	e.settleEvents()
	acquiredDead := e.count(func(ev client.Event) bool {
		return ev.Name == "acquired" && ev.Lease() != nil && ev.Lease().ProxyID == dead
	})
	require.Equal(t, 1, acquiredDead)
}
