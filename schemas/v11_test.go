package schemas

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// The contract's v1.1 additions, field by field.

func TestV11Models(t *testing.T) {
	s := loadSet(t)
	cd := obj{"failures": 3, "seconds": 1, "max_seconds": 4}
	run(t, s, "cooldown", []tcase{
		ok("full", cd),
		ok("max equals seconds", obj{"failures": 1, "seconds": 60, "max_seconds": 60}),
		bad("failures 0", mut(cd, "failures", 0), "/failures"),
		bad("seconds 0", mut(cd, "seconds", 0), "/seconds"),
		bad("fraction", mut(cd, "seconds", 1.5), "/seconds"),
		bad("string", mut(cd, "max_seconds", "4"), "/max_seconds"),
		bad("missing max_seconds", mut(cd, "max_seconds", del), "missing property 'max_seconds'"),
		bad("unknown", mut(cd, "jitter", true), "'jitter'"),
	})
	run(t, s, "proxy_pool", []tcase{
		ok("cooldown", mut(pool(), "cooldown", cd)),
		bad("partial cooldown", mut(pool(), "cooldown", obj{"failures": 1}), "/cooldown"),
	})
	run(t, s, "proxy", []tcase{
		ok("measured, cooling", proxyFull()),
		ok("latency zero", mut(proxyNulls(), "latency_ms", 0)),
		bad("omitted latency_ms", mut(proxyNulls(), "latency_ms", del), "missing property 'latency_ms'"),
		bad("omitted consecutive_failures", mut(proxyNulls(), "consecutive_failures", del), "missing property 'consecutive_failures'"),
		bad("omitted cooldown_until", mut(proxyNulls(), "cooldown_until", del), "missing property 'cooldown_until'"),
		bad("latency negative", mut(proxyNulls(), "latency_ms", -1), "/latency_ms"),
		bad("failures negative", mut(proxyNulls(), "consecutive_failures", -1), "/consecutive_failures"),
		bad("failures null", mut(proxyNulls(), "consecutive_failures", nil), "/consecutive_failures"),
		bad("cooldown offset", mut(proxyNulls(), "cooldown_until", "2024-05-01T12:00:00+02:00"), "/cooldown_until"),
	})
	run(t, s, "pool_stats", []tcase{
		ok("cooling", mut(poolStats(), "cooling_proxies", 2)),
		bad("omitted cooling_proxies", mut(poolStats(), "cooling_proxies", del), "missing property 'cooling_proxies'"),
		bad("cooling negative", mut(poolStats(), "cooling_proxies", -1), "/cooling_proxies"),
	})
	run(t, s, "proxy_filters", []tcase{
		ok("protocol one", mut(filtersNull(), "protocol", "socks5")),
		ok("protocol list", mut(filtersNull(), "protocol", []any{"http", "https"})),
		ok("nested protocol", mut(filtersNull(), "none_of", []any{mut(filtersNull(), "protocol", []any{"socks4"})})),
		bad("protocol empty list", mut(filtersNull(), "protocol", []any{}), "/protocol"),
		bad("protocol unknown", mut(filtersNull(), "protocol", "ftp"), "/protocol"),
		bad("omitted protocol", mut(filtersNull(), "protocol", del), "missing property 'protocol'"),
	})
	run(t, s, "outcome", []tcase{
		ok("success", `"success"`), ok("failure", `"failure"`),
		bad("other", `"timeout"`, "must be one of"), bad("case", `"Failure"`, "must be one of"),
	})
	run(t, s, "uuid_any", []tcase{
		ok("v4", `"`+idProxy+`"`),
		ok("v1", `"2d3e4f5a-6b7c-1d8e-9f0a-1b2c3d4e5f60"`),
		ok("v7 uppercase", `"0190A4E2-7B3C-7D8E-9F0A-1B2C3D4E5F60"`),
		bad("short", `"2d3e4f5a-6b7c-1d8e-9f0a"`, "does not match pattern"),
		bad("braces", `"{`+idProxy+`}"`, "does not match pattern"),
	})
	run(t, s, "credentials.input", []tcase{
		ok("full", obj{"user": "u", "password": "p"}),
		bad("empty user", obj{"user": "", "password": "p"}, "/user"),
		bad("empty password", obj{"user": "u", "password": ""}, "/password"),
	})
}

func TestV11Requests(t *testing.T) {
	s := loadSet(t)
	rel := obj{"lease_id": idLease}
	run(t, s, "release.request", []tcase{
		ok("success", mut(rel, "outcome", "success")),
		ok("failure with reason", mut(mut(rel, "outcome", "failure"), "reason", "HTTP 403 from target")),
		ok("reason of 1024 code points", mut(mut(rel, "outcome", "failure"), "reason", strings.Repeat("é", 1024))),
		ok("nulls", mut(mut(rel, "outcome", nil), "reason", nil)),
		ok("outcome with null reason", mut(mut(rel, "outcome", "failure"), "reason", nil)),
		bad("reason without outcome", mut(rel, "reason", "x"), "outcome"),
		bad("reason with null outcome", mut(mut(rel, "outcome", nil), "reason", "x"), "outcome"),
		bad("reason too long", mut(mut(rel, "outcome", "failure"), "reason", strings.Repeat("é", 1025)), "/reason"),
		bad("outcome unknown", mut(rel, "outcome", "timeout"), "/outcome"),
		bad("outcome wrong type", mut(rel, "outcome", true), "/outcome"),
		bad("reason wrong type", mut(mut(rel, "outcome", "failure"), "reason", 5), "/reason"),
	})
	acq := obj{"pool_name": "latam"}
	ids := make([]any, 100)
	for i := range ids {
		ids[i] = idProxy
	}
	run(t, s, "acquire.request", []tcase{
		ok("lowest_latency", mut(acq, "selector", "lowest_latency")),
		ok("exclude", mut(acq, "exclude_proxy_ids", []any{idProxy, "2d3e4f5a-6b7c-1d8e-9f0a-1b2c3d4e5f60"})),
		ok("exclude 100", mut(acq, "exclude_proxy_ids", ids)),
		ok("exclude empty", mut(acq, "exclude_proxy_ids", []any{})),
		ok("exclude null", mut(acq, "exclude_proxy_ids", nil)),
		ok("protocol filter", mut(acq, "filters", obj{"protocol": "http"})),
		ok("protocol list nested", mut(acq, "filters", obj{"any_of": []any{obj{"protocol": []any{"socks4", "socks5"}}}})),
		bad("exclude 101", mut(acq, "exclude_proxy_ids", append(ids, idProxy)), "/exclude_proxy_ids"),
		bad("exclude not uuid", mut(acq, "exclude_proxy_ids", []any{"p1"}), "/exclude_proxy_ids/0"),
		bad("exclude wrong type", mut(acq, "exclude_proxy_ids", idProxy), "/exclude_proxy_ids"),
		bad("protocol empty list", mut(acq, "filters", obj{"protocol": []any{}}), "/filters/protocol"),
		bad("protocol unknown", mut(acq, "filters", obj{"protocol": "ftp"}), "/filters/protocol"),
		bad("nested protocol unknown", mut(acq, "filters", obj{"all_of": []any{obj{"protocol": []any{"http", "gopher"}}}}), "/filters/all_of/0/protocol"),
	})
	cd := obj{"failures": 3, "seconds": 1, "max_seconds": 4}
	run(t, s, "pools_create.request", []tcase{
		ok("cooldown", obj{"name": "latam", "cooldown": cd}),
		ok("cooldown null", obj{"name": "latam", "cooldown": nil}),
		bad("cooldown partial", obj{"name": "latam", "cooldown": obj{"failures": 3, "seconds": 1}}, "max_seconds"),
	})
	run(t, s, "pools_update.request", []tcase{
		ok("cooldown", obj{"name": "latam", "cooldown": cd}),
		ok("cooldown off", obj{"name": "latam", "cooldown": nil}),
		bad("cooldown wrong type", obj{"name": "latam", "cooldown": 60}, "/cooldown"),
	})
	upd := obj{"proxy_id": idProxy}
	run(t, s, "proxies_update.request", []tcase{
		ok("feedback state", mut(mut(upd, "consecutive_failures", 0), "cooldown_until", "2024-05-01T12:00:00+02:00")),
		ok("end cooldown", mut(upd, "cooldown_until", nil)),
		bad("failures null", mut(upd, "consecutive_failures", nil), "/consecutive_failures"),
		bad("failures negative", mut(upd, "consecutive_failures", -1), "/consecutive_failures"),
		bad("cooldown not a time", mut(upd, "cooldown_until", "soon"), "/cooldown_until"),
		bad("blank password", mut(upd, "credentials", obj{"user": "u", "password": ""}), "/credentials"),
	})
	run(t, s, "proxy.input", []tcase{
		bad("blank user", obj{"host": "h", "port": 1, "credentials": obj{"user": "", "password": "p"}}, "/credentials"),
	})
	run(t, s, "health_last.request", []tcase{
		ok("id", obj{"proxy_id": idProxy}),
		bad("missing", obj{}, "missing property 'proxy_id'"),
		bad("unknown", obj{"proxy_id": idProxy, "pool_name": "latam"}, "'pool_name'"),
	})
}

func TestV11RepliesAndEvents(t *testing.T) {
	s := loadSet(t)
	run(t, s, "health_last.reply", []tcase{
		ok("result", obj{"result": hcResult()}),
		ok("none", obj{"result": nil}),
		bad("omitted", obj{}, "missing property 'result'"),
		bad("bad result", obj{"result": mut(hcResult(), "attempts", 0)}, "/result"),
	})
	rel := obj{"lease": leaseReleased(), "pool_name": "latam", "released_at": ts2,
		"lease_duration_ms": 300000, "pool_stats": poolStats(), "outcome": "failure", "reason": "timeout"}
	run(t, s, "event.released", []tcase{
		ok("failure", rel),
		ok("no outcome", mut(mut(rel, "outcome", nil), "reason", nil)),
		bad("omitted outcome", mut(rel, "outcome", del), "missing property 'outcome'"),
		bad("omitted reason", mut(rel, "reason", del), "missing property 'reason'"),
		bad("outcome unknown", mut(rel, "outcome", "meh"), "/outcome"),
	})
	cool := obj{"proxy_id": idProxy, "pool_name": "latam", "consecutive_failures": 3, "cooldown_until": ts2, "reason": nil}
	run(t, s, "event.cooldown", []tcase{
		ok("no reason", cool),
		ok("reason", mut(cool, "reason", "HTTP 429")),
		bad("omitted reason", mut(cool, "reason", del), "missing property 'reason'"),
		bad("cooldown_until null", mut(cool, "cooldown_until", nil), "/cooldown_until"),
		bad("failures 0", mut(cool, "consecutive_failures", 0), "/consecutive_failures"),
		bad("unknown", mut(cool, "seconds", 1), "'seconds'"),
	})

	// The Go values as the worker emits them.
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	lat := 12.5
	p := model.Proxy{ID: idProxy, PoolID: idPool, PoolName: "latam", Host: "h", Port: 1, Protocol: model.ProtocolHTTP,
		Status: model.ProxyActive, URL: "http://h:1", LatencyMs: &lat, ConsecutiveFailures: 4, CooldownUntil: &at}
	require.NoError(t, s.ValidateValue("proxy", p))
	reason := "x"
	require.NoError(t, s.ValidateValue("event.cooldown", model.CooldownEvent{ProxyID: idProxy, PoolName: "latam",
		ConsecutiveFailures: 4, CooldownUntil: at, Reason: &reason}))
	require.NoError(t, s.ValidateValue("proxy_pool", model.ProxyPool{ID: idPool, Name: "latam",
		Cooldown: &model.Cooldown{Failures: 3, Seconds: 1, MaxSeconds: 4}}))
	require.NoError(t, s.ValidateValue("health_last.reply", model.HealthLastReply{}))
	require.NoError(t, s.ValidateValue("release.request", model.ReleaseFailure(idLease, strings.Repeat("é", 2000))))
	require.NoError(t, s.ValidateValue("release.request", model.ReleaseSuccess(idLease)))
	f := &model.ProxyFilters{Protocol: model.Protocols{model.ProtocolSOCKS5}}
	require.NoError(t, s.ValidateValue("acquire.request", model.AcquireRequest{PoolName: "latam", Filters: f,
		ExcludeProxyIDs: []string{idProxy}}))
	require.NoError(t, s.ValidateValue("proxy_filters", f))
}
