package schemas

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// ---------------------------------------------------------------- fixtures

const (
	idProxy = "0b7c6f0e-9d1a-4c3e-8f5a-2b1d3c4e5f60"
	idPool  = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	idLease = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f60"
	idCons  = "3e4f5a6b-7c8d-4e9f-a01b-2c3d4e5f6071"
	ts1     = "2024-05-01T10:00:00Z"
	ts2     = "2024-05-01T10:05:00.123456789Z"
)

// del, used as a value in mut, removes the key.
type delT struct{}

var del = delT{}

type obj = map[string]any

// clone deep-copies a JSON-like value.
func clone(v any) any {
	switch t := v.(type) {
	case obj:
		c := obj{}
		for k, x := range t {
			c[k] = clone(x)
		}
		return c
	case []any:
		c := make([]any, len(t))
		for i, x := range t {
			c[i] = clone(x)
		}
		return c
	}
	return v
}

// mut returns a copy of base with the dot-separated path set to v (or
// removed when v is del). Numeric path segments index arrays.
func mut(base obj, path string, v any) obj {
	out := clone(base).(obj)
	keys := strings.Split(path, ".")
	var cur any = out
	for _, k := range keys[:len(keys)-1] {
		switch c := cur.(type) {
		case obj:
			cur = c[k]
		case []any:
			i := 0
			for _, r := range k {
				i = i*10 + int(r-'0')
			}
			cur = c[i]
		}
	}
	last := keys[len(keys)-1]
	m := cur.(obj)
	if _, ok := v.(delT); ok {
		if _, had := m[last]; !had {
			panic("mut: no key " + path)
		}
		delete(m, last)
	} else {
		m[last] = v
	}
	return out
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func proxyNulls() obj {
	return obj{
		"id": idProxy, "pool_id": idPool, "pool_name": "latam",
		"host": "10.0.0.1", "port": 8080, "protocol": "http", "status": "active",
		"checked_at": nil, "credentials": nil, "source": nil, "country": nil, "city": nil,
		"latitude": nil, "longitude": nil, "isp": nil, "asn": nil,
		"max_concurrency": nil, "current_leases": 0, "url": "http://10.0.0.1:8080",
		"latency_ms": nil, "consecutive_failures": 0, "cooldown_until": nil,
	}
}

func proxyFull() obj {
	return obj{
		"id": idProxy, "pool_id": idPool, "pool_name": "latam",
		"host": "2001:db8::1", "port": 1080, "protocol": "socks5", "status": "slow",
		"checked_at": ts2, "credentials": obj{"user": "u", "password": "p@ss"},
		"source": "vendor-a", "country": "AR", "city": "Buenos Aires",
		"latitude": -34.6, "longitude": -58.38, "isp": "Telecom", "asn": 7303,
		"max_concurrency": 2, "current_leases": 1, "url": "socks5://u:p%40ss@[2001:db8::1]:1080",
		"latency_ms": 12.5, "consecutive_failures": 3, "cooldown_until": ts2,
	}
}

func leaseActive() obj {
	return obj{
		"id": idLease, "proxy_id": idProxy, "pool_id": idPool, "pool_name": "latam",
		"consumer_id": idCons, "consumer_name": "default", "status": "active",
		"acquired_at": ts1, "expires_at": ts2, "released_at": nil, "fencing_token": 7,
	}
}

func leaseReleased() obj {
	return mut(mut(leaseActive(), "status", "released"), "released_at", ts2)
}

func leaseExpired() obj { return mut(leaseActive(), "status", "expired") }

func poolStats() obj {
	return obj{
		"pool_name": "latam", "total_proxies": 3, "active_proxies": 2,
		"available_proxies": 1, "leased_proxies": 1, "total_leases": 2, "cooling_proxies": 0, "collected_at": ts2,
	}
}

func hcOptions() obj {
	return obj{
		"target_url": "https://example.com/health", "timeout": 5.0, "attempts": 2,
		"expected_status_codes": []any{200, 204}, "slow_threshold_ms": 2000,
		"allow_redirects": true, "headers": obj{"User-Agent": "pharox"},
	}
}

func healthCheck() obj {
	return obj{"enabled": true, "interval_seconds": 60, "failure_threshold": 3, "options": hcOptions()}
}

func pool() obj {
	return obj{"id": idPool, "name": "latam", "description": nil, "health_check": nil, "cooldown": nil}
}

func hcResult() obj {
	return obj{
		"proxy_id": idProxy, "status": "active", "latency_ms": 12.5, "protocol": "http",
		"attempts": 1, "status_code": 200, "checked_at": ts2, "error_message": nil,
	}
}

func filtersNull() obj {
	return obj{
		"protocol": nil, "source": nil, "country": nil, "city": nil, "isp": nil, "asn": nil,
		"latitude": nil, "longitude": nil, "radius_km": nil,
		"all_of": nil, "any_of": nil, "none_of": nil,
	}
}

func acquiredEvent() obj {
	return obj{
		"lease": leaseActive(), "pool_name": "latam", "consumer_name": "default",
		"filters": nil, "selector": "first_available", "started_at": ts1,
		"completed_at": ts2, "duration_ms": 1.25, "pool_stats": poolStats(),
	}
}

// ---------------------------------------------------------------- harness

type tcase struct {
	name string
	doc  any    // a JSON string, or a value to marshal
	want string // "" = valid; otherwise a substring the error must contain
}

func ok(name string, doc any) tcase { return tcase{name, doc, ""} }

func bad(name string, doc any, why string) tcase {
	if why == "" {
		panic("bad case needs a reason: " + name)
	}
	return tcase{name, doc, why}
}

func loadSet(t *testing.T) *Set {
	t.Helper()
	s, err := Load()
	require.NoError(t, err)
	return s
}

func run(t *testing.T, s *Set, schema string, cases []tcase) {
	t.Helper()
	require.True(t, s.Has(schema), "no schema %q", schema)
	for _, c := range cases {
		doc, isString := c.doc.(string)
		if !isString {
			doc = js(c.doc)
		}
		t.Run(schema+"/"+c.name, func(t *testing.T) {
			err := s.Validate(schema, []byte(doc))
			if c.want == "" {
				require.NoError(t, err, "document: %s", doc)
				return
			}
			require.Error(t, err, "document should be refused: %s", doc)
			require.Contains(t, err.Error(), "schemas: "+schema+":")
			require.Contains(t, err.Error(), c.want, "refused for another reason; document: %s", doc)
		})
	}
}

// ---------------------------------------------------------------- set-level

func TestLoadCompilesEveryFile(t *testing.T) {
	s := loadSet(t)
	paths, err := fs.Glob(FS(), "*.json")
	require.NoError(t, err)
	var want []string
	for _, p := range paths {
		want = append(want, strings.TrimSuffix(p, ".json"))
	}
	sort.Strings(want)
	require.Equal(t, want, s.Names())
	require.True(t, sort.StringsAreSorted(s.Names()))

	for _, p := range paths {
		raw, err := fs.ReadFile(FS(), p)
		require.NoError(t, err)
		var doc obj
		require.NoError(t, json.Unmarshal(raw, &doc), p)
		require.Equal(t, "https://json-schema.org/draft/2020-12/schema", doc["$schema"], p)
		require.Equal(t, BaseURL+p, doc["$id"], p)
	}

	// Names returns a copy.
	n := s.Names()
	n[0] = "mutated"
	require.NotEqual(t, "mutated", s.Names()[0])
}

func TestExpectedSchemasExist(t *testing.T) {
	s := loadSet(t)
	for _, name := range []string{
		"proxy", "lease", "pool_stats", "consumer", "proxy_pool", "health_check",
		"health_check_options", "health_check_result", "proxy_filters", "error", "credentials",
		"event.acquired", "event.acquire_failed", "event.released", "event.expired",
		"event.renewed", "event.health", "event.cooldown", "cooldown", "outcome", "uuid_any", "credentials.input",
	} {
		require.True(t, s.Has(name), name)
	}
	for _, op := range Operations() {
		req, rep, found := Operation(op)
		require.True(t, found, op)
		require.True(t, s.Has(req), "%s request %s", op, req)
		require.True(t, s.Has(rep), "%s reply %s", op, rep)
	}
	_, _, found := Operation("admin.nope")
	require.False(t, found)
	for _, ev := range []string{
		model.EventAcquired, model.EventAcquireFailed, model.EventReleased,
		model.EventExpired, model.EventRenewed, model.EventHealth, model.EventCooldown,
	} {
		name, found := Event(ev)
		require.True(t, found, ev)
		require.True(t, s.Has(name), name)
	}
	_, found = Event("nope")
	require.False(t, found)
}

func TestValidateErrors(t *testing.T) {
	s := loadSet(t)

	err := s.Validate("nope", []byte(`{}`))
	require.ErrorContains(t, err, `unknown schema "nope"`)

	err = s.Validate("stats.request", []byte(`{"pool_name":`))
	require.ErrorContains(t, err, "schemas: stats.request: invalid JSON")

	err = s.Validate("stats.request", []byte(`{"pool_name":"a"} {}`))
	require.ErrorContains(t, err, "schemas: stats.request: invalid JSON")

	err = s.Validate("acquire.request", []byte(`{"pool":"latam"}`))
	require.Error(t, err)
	var ve *jsonschema.ValidationError
	require.True(t, errors.As(err, &ve), "wraps *jsonschema.ValidationError")
	require.Contains(t, err.Error(), "acquire.request")
	require.Contains(t, err.Error(), "'pool'") // the unknown field, verbatim
	require.Contains(t, err.Error(), "pool_name")

	require.NoError(t, s.ValidateValue("consumer", model.Consumer{ID: idCons, Name: "default"}))
	require.ErrorContains(t, s.ValidateValue("consumer", model.Consumer{ID: "x", Name: "default"}), "/id")
	require.ErrorContains(t, s.ValidateValue("consumer", make(chan int)), "marshal")
}

func TestLoadIsIndependent(t *testing.T) {
	a := loadSet(t)
	b := loadSet(t)
	require.NotSame(t, a, b)
	require.Equal(t, a.Names(), b.Names())
}

// schemaDocs parses every embedded file.
func schemaDocs(t *testing.T) map[string]obj {
	t.Helper()
	out := map[string]obj{}
	paths, err := fs.Glob(FS(), "*.json")
	require.NoError(t, err)
	for _, p := range paths {
		raw, err := fs.ReadFile(FS(), p)
		require.NoError(t, err)
		var doc obj
		require.NoError(t, json.Unmarshal(raw, &doc))
		out[strings.TrimSuffix(p, ".json")] = doc
	}
	return out
}

// surface returns the property and required names of a schema, following a
// top-level $ref to another whole file.
func surface(t *testing.T, docs map[string]obj, name string) (props, required map[string]bool) {
	t.Helper()
	props, required = map[string]bool{}, map[string]bool{}
	for name != "" {
		doc, found := docs[name]
		require.True(t, found, name)
		if p, _ := doc["properties"].(obj); p != nil {
			for k := range p {
				props[k] = true
			}
		}
		if r, _ := doc["required"].([]any); r != nil {
			for _, k := range r {
				required[k.(string)] = true
			}
		}
		name = ""
		if r, _ := doc["$ref"].(string); r != "" {
			require.True(t, strings.HasPrefix(r, BaseURL) && strings.HasSuffix(r, ".json"), r)
			name = strings.TrimSuffix(strings.TrimPrefix(r, BaseURL), ".json")
		}
	}
	return props, required
}

func jsonFields(typ reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < typ.NumField(); i++ {
		tag := typ.Field(i).Tag.Get("json")
		n := strings.Split(tag, ",")[0]
		if n == "" || n == "-" {
			continue
		}
		out[n] = true
	}
	return out
}

// TestSchemasMatchGoTypes keeps the schemas and the Go wire types in step:
// the same keys on both sides.
func TestSchemasMatchGoTypes(t *testing.T) {
	docs := schemaDocs(t)
	pairs := map[string]any{
		"proxy":                      model.Proxy{},
		"lease":                      model.Lease{},
		"pool_stats":                 model.PoolStatsSnapshot{},
		"consumer":                   model.Consumer{},
		"proxy_pool":                 model.ProxyPool{},
		"health_check":               model.HealthCheck{},
		"health_check.input":         model.HealthCheck{},
		"health_check_options":       model.HealthCheckOptions{},
		"health_check_options.input": model.HealthCheckOptions{},
		"health_check_result":        model.HealthCheckResult{},
		"proxy_filters":              model.ProxyFilters{},
		"proxy_filters.input":        model.ProxyFilters{},
		"credentials":                model.Credentials{},
		"credentials.input":          model.Credentials{},
		"cooldown":                   model.Cooldown{},
		"health_last.request":        model.HealthLastRequest{},
		"health_last.reply":          model.HealthLastReply{},
		"event.cooldown":             model.CooldownEvent{},
		"error":                      model.ErrorBody{},
		"acquire.request":            model.AcquireRequest{},
		"release.request":            model.ReleaseRequest{},
		"renew.request":              model.RenewRequest{},
		"leases_get.request":         model.LeaseGetRequest{},
		"cleanup.request":            model.EmptyRequest{},
		"pools_list.request":         model.EmptyRequest{},
		"consumers_list.request":     model.EmptyRequest{},
		"stats.request":              model.StatsRequest{},
		"pools_create.request":       model.PoolCreateRequest{},
		"pools_update.request":       model.PoolUpdateRequest{},
		"pools_delete.request":       model.PoolDeleteRequest{},
		"proxy.input":                model.ProxyInput{},
		"proxies_add.request":        model.ProxiesAddRequest{},
		"proxies_list.request":       model.ProxiesListRequest{},
		"proxies_get.request":        model.ProxyGetRequest{},
		"proxies_update.request":     model.ProxyUpdateRequest{},
		"proxies_delete.request":     model.ProxyDeleteRequest{},
		"consumers_ensure.request":   model.ConsumerEnsureRequest{},
		"health_apply.request":       model.HealthApplyRequest{},
		"health_check.request":       model.HealthCheckRequest{},
		"health_check.reply":         model.HealthCheckReply{},
		"acquire.reply":              model.AcquireReply{},
		"lease.reply":                model.LeaseReply{},
		"cleanup.reply":              model.CleanupReply{},
		"pools_list.reply":           model.PoolsReply{},
		"proxies_add.reply":          model.ProxiesReply{},
		"proxies_list.reply":         model.ProxiesPage{},
		"deleted.reply":              model.DeletedReply{},
		"consumers_list.reply":       model.ConsumersReply{},
		"event.acquire":              model.AcquireEvent{},
		"event.acquired":             model.AcquireEvent{},
		"event.acquire_failed":       model.AcquireEvent{},
		"event.released":             model.ReleaseEvent{},
		"event.expired":              model.ExpiredEvent{},
		"event.renewed":              model.RenewedEvent{},
		"event.health":               model.HealthEvent{},
	}
	for name, v := range pairs {
		props, _ := surface(t, docs, name)
		require.Equal(t, slices.Sorted(maps.Keys(jsonFields(reflect.TypeOf(v)))), slices.Sorted(maps.Keys(props)), "schema %s vs Go %T", name, v)
	}
}

// TestRepliesRequireEveryKey encodes "every field of a model is always
// present in replies and events" and "unknown request fields are refused".
func TestRepliesRequireEveryKey(t *testing.T) {
	docs := schemaDocs(t)
	for name := range docs {
		props, required := surface(t, docs, name)
		if len(props) == 0 {
			continue
		}
		if strings.HasSuffix(name, ".request") || strings.HasSuffix(name, ".input") {
			continue
		}
		require.Equal(t, slices.Sorted(maps.Keys(props)), slices.Sorted(maps.Keys(required)), "%s must require every key", name)
	}
	// Every object schema that lists properties closes them (or extends
	// another schema by $ref, which closes them).
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch x := v.(type) {
		case obj:
			if _, hasProps := x["properties"]; hasProps && x["type"] == "object" {
				_, closed := x["additionalProperties"]
				_, extends := x["$ref"]
				require.True(t, (closed && x["additionalProperties"] == false) || extends,
					"%s: object with properties must set additionalProperties false", where)
			}
			for k, y := range x {
				walk(where+"/"+k, y)
			}
		case []any:
			for _, y := range x {
				walk(where, y)
			}
		}
	}
	for name, doc := range docs {
		walk(name, doc)
	}
}

// TestGoValuesValidate marshals the Go wire types and checks them against
// the schemas, as the worker will emit them.
func TestGoValuesValidate(t *testing.T) {
	s := loadSet(t)
	str := func(v string) *string { return &v }
	f64 := func(v float64) *float64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	at := time.Date(2024, 5, 1, 10, 0, 0, 123, time.UTC)

	proxy := model.Proxy{
		ID: idProxy, PoolID: idPool, PoolName: "latam", Host: "10.0.0.1", Port: 8080,
		Protocol: model.ProtocolHTTP, Status: model.ProxyActive,
		URL: model.ProxyURL(model.ProtocolHTTP, "10.0.0.1", 8080, nil),
	}
	require.NoError(t, s.ValidateValue("proxy", proxy))
	full := proxy
	full.Host = "::1"
	full.Credentials = &model.Credentials{User: "a b", Password: "p@:/"}
	full.URL = model.ProxyURL(model.ProtocolSOCKS5, full.Host, 1080, full.Credentials)
	full.Latitude, full.Longitude, full.ASN, full.Country = f64(1.5), f64(-2), i64(123), str("AR")
	full.CheckedAt = &at
	require.NoError(t, s.ValidateValue("proxy", full))

	lease := model.Lease{
		ID: idLease, ProxyID: idProxy, PoolID: idPool, PoolName: "latam",
		ConsumerID: idCons, ConsumerName: "default", Status: model.LeaseActive,
		AcquiredAt: at, ExpiresAt: at.Add(time.Minute), FencingToken: 1,
	}
	require.NoError(t, s.ValidateValue("lease", lease))
	require.NoError(t, s.ValidateValue("acquire.reply", model.AcquireReply{Lease: &lease, Proxy: &proxy}))
	require.NoError(t, s.ValidateValue("acquire.reply", model.AcquireReply{}))
	require.NoError(t, s.ValidateValue("lease.reply", model.LeaseReply{Lease: &lease}))

	// A non-UTC time marshals with an offset: the schema refuses it, so the
	// worker must emit UTC.
	local := lease
	local.AcquiredAt = at.In(time.FixedZone("X", 3600))
	require.ErrorContains(t, s.ValidateValue("lease", local), "/acquired_at")

	stats := model.PoolStatsSnapshot{PoolName: "latam", TotalProxies: 1, CollectedAt: at}
	filters := &model.ProxyFilters{
		Country: str("AR"),
		AnyOf:   []model.ProxyFilters{{City: str("Rosario")}, {Latitude: f64(1), Longitude: f64(2), RadiusKm: f64(5)}},
	}
	require.NoError(t, s.ValidateValue("event.acquired", model.AcquireEvent{
		Lease: &lease, PoolName: "latam", ConsumerName: "default", Filters: filters,
		Selector: model.SelectorRoundRobin, StartedAt: at, CompletedAt: at, DurationMs: 0.5, PoolStats: &stats,
	}))
	require.NoError(t, s.ValidateValue("event.acquire_failed", model.AcquireEvent{
		PoolName: "latam", ConsumerName: "default", Selector: model.SelectorFirstAvailable,
		StartedAt: at, CompletedAt: at, PoolStats: &stats,
	}))
	released := lease
	released.Status, released.ReleasedAt = model.LeaseReleased, &at
	require.NoError(t, s.ValidateValue("event.released", model.ReleaseEvent{
		Lease: &released, PoolName: "latam", ReleasedAt: at, LeaseDurationMs: 10, PoolStats: &stats,
	}))
	expired := lease
	expired.Status = model.LeaseExpired
	require.NoError(t, s.ValidateValue("event.expired", model.ExpiredEvent{
		Lease: &expired, PoolName: "latam", ExpiredAt: at, PoolStats: &stats,
	}))
	require.NoError(t, s.ValidateValue("event.renewed", model.RenewedEvent{
		Lease: &lease, PoolName: "latam", PreviousExpiresAt: at,
	}))
	result := model.HealthCheckResult{
		ProxyID: idProxy, Status: model.ProxySlow, LatencyMs: 2500, Protocol: model.ProtocolHTTPS,
		Attempts: 1, CheckedAt: at,
	}
	require.NoError(t, s.ValidateValue("event.health", model.HealthEvent{
		ProxyID: idProxy, PoolName: "latam", PreviousStatus: model.ProxyActive, Result: result,
	}))
	require.NoError(t, s.ValidateValue("health_check.reply", obj{"results": []model.HealthCheckResult{result}}))

	poolv := model.ProxyPool{ID: idPool, Name: "latam", HealthCheck: &model.HealthCheck{
		Enabled: true, IntervalSeconds: 30, FailureThreshold: 2,
		Options: &model.HealthCheckOptions{
			TargetURL: "https://example.com", Timeout: 5, Attempts: 1,
			ExpectedStatusCodes: []int{200}, SlowThresholdMs: 2000, AllowRedirects: true,
			Headers: map[string]string{},
		},
	}}
	require.NoError(t, s.ValidateValue("proxy_pool", poolv))
	require.NoError(t, s.ValidateValue("pools_list.reply", model.PoolsReply{Pools: []model.ProxyPool{poolv}}))
	// Nil maps and slices marshal as null, which the contract's models do
	// not allow: the worker must send {} / [] instead.
	poolv.HealthCheck.Options.Headers = nil
	require.ErrorContains(t, s.ValidateValue("proxy_pool", poolv), "headers")
	require.ErrorContains(t, s.ValidateValue("pools_list.reply", model.PoolsReply{}), "/pools")

	require.NoError(t, s.ValidateValue("proxies_list.reply", model.ProxiesPage{Proxies: []model.Proxy{proxy}}))
	require.NoError(t, s.ValidateValue("proxies_add.reply", model.ProxiesReply{Proxies: []model.Proxy{proxy}}))
	require.NoError(t, s.ValidateValue("consumers_list.reply", model.ConsumersReply{Consumers: []model.Consumer{}}))
	require.NoError(t, s.ValidateValue("cleanup.reply", model.CleanupReply{Released: 3}))
	require.NoError(t, s.ValidateValue("deleted.reply", model.DeletedReply{Deleted: true}))
	require.NoError(t, s.ValidateValue("pool_stats", stats))
	require.NoError(t, s.ValidateValue("error", model.ErrorBody{Error: model.ErrorDetail{Code: "pool_not_found", Message: "x"}}))

	// Requests as a Go client marshals them (omitempty fields).
	sel := model.SelectorLeastUsed
	dur := 60
	require.NoError(t, s.ValidateValue("acquire.request", model.AcquireRequest{
		PoolName: "latam", ConsumerName: str("c1"), DurationSeconds: &dur, Filters: filters,
		Selector: &sel, WaitSeconds: f64(2.5), RequestID: str("r-1"),
	}))
	require.NoError(t, s.ValidateValue("acquire.request", model.AcquireRequest{PoolName: "latam"}))
	require.NoError(t, s.ValidateValue("release.request", model.ReleaseRequest{LeaseID: idLease}))
	require.NoError(t, s.ValidateValue("renew.request", model.RenewRequest{LeaseID: idLease, DurationSeconds: &dur}))
	require.NoError(t, s.ValidateValue("pools_delete.request", model.PoolDeleteRequest{Name: "latam"}))
	require.NoError(t, s.ValidateValue("proxies_add.request", model.ProxiesAddRequest{
		PoolName: "latam", Proxies: []model.ProxyInput{{Host: "h", Port: 1}},
	}))
	require.NoError(t, s.ValidateValue("health_apply.request", model.HealthApplyRequest{
		ProxyID: idProxy, Status: model.ProxyInactive, LatencyMs: 0, Protocol: model.ProtocolHTTP,
	}))
	require.NoError(t, s.ValidateValue("cleanup.request", model.EmptyRequest{}))
}

// ---------------------------------------------------------------- scalars

func TestScalars(t *testing.T) {
	s := loadSet(t)
	run(t, s, "uuid", []tcase{
		ok("v4", `"`+idProxy+`"`),
		bad("uppercase", `"`+strings.ToUpper(idProxy)+`"`, "does not match pattern"),
		bad("v1", `"2d3e4f5a-6b7c-1d8e-9f0a-1b2c3d4e5f60"`, "does not match pattern"),
		bad("bad variant", `"2d3e4f5a-6b7c-4d8e-cf0a-1b2c3d4e5f60"`, "does not match pattern"),
		bad("braces", `"{`+idProxy+`}"`, "does not match pattern"),
		bad("number", `1`, "want string"),
	})
	run(t, s, "timestamp", []tcase{
		ok("seconds", `"`+ts1+`"`),
		ok("nanos", `"`+ts2+`"`),
		bad("offset", `"2024-05-01T10:00:00+00:00"`, "does not match pattern"),
		bad("lowercase z", `"2024-05-01T10:00:00z"`, "does not match pattern"),
		bad("no zone", `"2024-05-01T10:00:00"`, "does not match pattern"),
		bad("date only", `"2024-05-01"`, "does not match pattern"),
		bad("space", `"2024-05-01 10:00:00Z"`, "does not match pattern"),
		bad("trailing newline", `"2024-05-01T10:00:00Z\n"`, "does not match pattern"),
		bad("epoch number", `1714557600`, "want string"),
	})
	run(t, s, "timestamp_rfc3339", []tcase{
		ok("Z", `"`+ts2+`"`),
		ok("offset", `"2024-05-01T12:00:00.5+02:00"`),
		ok("negative offset", `"2024-05-01T05:00:00-05:00"`),
		bad("no zone", `"2024-05-01T10:00:00"`, "does not match pattern"),
		bad("compact offset", `"2024-05-01T10:00:00+0200"`, "does not match pattern"),
	})
	run(t, s, "name", []tcase{
		ok("simple", `"latam_1-b"`),
		ok("128", `"`+strings.Repeat("a", 128)+`"`),
		bad("129", `"`+strings.Repeat("a", 129)+`"`, "does not match pattern"),
		bad("empty", `""`, "does not match pattern"),
		bad("space", `"la tam"`, "does not match pattern"),
		bad("dot", `"la.tam"`, "does not match pattern"),
		bad("unicode", `"látam"`, "does not match pattern"),
	})
	run(t, s, "port", []tcase{
		ok("1", `1`), ok("65535", `65535`),
		bad("0", `0`, "minimum"), bad("65536", `65536`, "maximum"),
		bad("fraction", `80.5`, "want integer"), bad("string", `"80"`, "want integer"),
	})
	run(t, s, "selector", []tcase{
		ok("first_available", `"first_available"`), ok("least_used", `"least_used"`),
		ok("round_robin", `"round_robin"`), ok("random", `"random"`), ok("lowest_latency", `"lowest_latency"`),
		bad("unknown", `"fastest"`, "must be one of"), bad("case", `"Random"`, "must be one of"),
	})
	run(t, s, "protocol", []tcase{
		ok("http", `"http"`), ok("https", `"https"`), ok("socks4", `"socks4"`), ok("socks5", `"socks5"`),
		bad("ftp", `"ftp"`, "must be one of"),
	})
	run(t, s, "proxy_status", []tcase{
		ok("active", `"active"`), ok("inactive", `"inactive"`), ok("slow", `"slow"`), ok("banned", `"banned"`),
		bad("dead", `"dead"`, "must be one of"),
	})
	run(t, s, "lease_status", []tcase{
		ok("active", `"active"`), ok("released", `"released"`), ok("expired", `"expired"`),
		bad("revoked", `"revoked"`, "must be one of"),
	})
}

// TestHostSchemaMatchesTheWorker: the host schema accepts what the
// worker's check (model.ValidHost) accepts, and refuses what it refuses.
func TestHostSchemaMatchesTheWorker(t *testing.T) {
	s := loadSet(t)
	label63 := strings.Repeat("a", 63)
	for _, host := range []string{
		"proxy.example.com", "localhost", "h", "a-b.c-d.io", "xn--bcher-kva.example", "1password.com", "a.1b",
		label63 + ".com", strings.Repeat(label63+".", 3) + strings.Repeat("b", 61),
		"10.0.0.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::1", "::", "::ffff:192.0.2.1", "64:ff9b::192.0.2.1",
		"2001:0db8:0000:0000:0000:ff00:0042:8329", "fe80::1:2:3:4", "1:2:3:4:5:6:7::",
		"bad host", "", "-a.com", "a-.com", "a..com", ".a.com", "a.com.", "a_b.com", "ex@mple.com", "http://a.com",
		"a.com:8080", "[2001:db8::1]", "fe80::1%eth0", "2001:db8:::1", "1:2:3:4:5:6:7:8:9", "256.1.1.1", "1.2.3",
		"010.1.1.1", "1.2.3.4.5", strings.Repeat("a", 64), strings.Repeat(label63+".", 4) + "a", "ünïcode.com", "12345",
	} {
		data, err := json.Marshal(host)
		require.NoError(t, err)
		err = s.Validate("host", data)
		require.Equal(t, model.ValidHost(host), err == nil, "host %q: schema says %v", host, err)
	}
}

// ---------------------------------------------------------------- requests

func TestAcquireRequest(t *testing.T) {
	s := loadSet(t)
	min := obj{"pool_name": "latam"}
	fullReq := obj{
		"pool_name": "latam", "consumer_name": "crawler-1", "duration_seconds": 86400,
		"filters": obj{"country": "AR", "asn": 7303, "all_of": []any{obj{"city": "Rosario"}},
			"any_of":  []any{obj{"latitude": -34.6, "longitude": -58.4, "radius_km": 50}},
			"none_of": []any{obj{"isp": "Bad", "none_of": []any{obj{"source": "x"}}}}},
		"selector": "least_used", "wait_seconds": 60, "request_id": strings.Repeat("r", 128),
	}
	run(t, s, "acquire.request", []tcase{
		ok("minimal", min),
		ok("full", fullReq),
		ok("optional nulls", obj{"pool_name": "latam", "consumer_name": nil, "duration_seconds": nil,
			"filters": nil, "selector": nil, "wait_seconds": nil, "request_id": nil}),
		ok("empty filters", mut(min, "filters", obj{})),
		ok("coordinates without radius", mut(min, "filters", obj{"latitude": 90, "longitude": -180})),
		ok("wait zero", mut(min, "wait_seconds", 0)),
		ok("wait fraction", mut(min, "wait_seconds", 0.25)),
		ok("duration 1", mut(min, "duration_seconds", 1)),
		ok("filters null keys", mut(min, "filters", filtersNull())),
		ok("filters empty lists", mut(min, "filters", obj{"all_of": []any{}, "any_of": nil})),

		bad("unknown field pool", obj{"pool": "latam"}, "'pool'"),
		bad("unknown field besides pool_name", mut(min, "selectr", "random"), "'selectr'"),
		bad("missing pool_name", obj{"consumer_name": "c"}, "missing property 'pool_name'"),
		bad("pool_name null", obj{"pool_name": nil}, "/pool_name"),
		bad("pool_name wrong type", obj{"pool_name": 5}, "/pool_name"),
		bad("pool_name pattern", obj{"pool_name": "la tam"}, "/pool_name"),
		bad("consumer_name pattern", mut(min, "consumer_name", "a/b"), "/consumer_name"),
		bad("duration 0", mut(min, "duration_seconds", 0), "/duration_seconds"),
		bad("duration 86401", mut(min, "duration_seconds", 86401), "/duration_seconds"),
		bad("duration fraction", mut(min, "duration_seconds", 1.5), "/duration_seconds"),
		bad("duration string", mut(min, "duration_seconds", "300"), "/duration_seconds"),
		bad("wait negative", mut(min, "wait_seconds", -0.1), "/wait_seconds"),
		bad("wait over 60", mut(min, "wait_seconds", 60.5), "/wait_seconds"),
		bad("wait string", mut(min, "wait_seconds", "1"), "/wait_seconds"),
		bad("selector unknown", mut(min, "selector", "fastest"), "/selector"),
		bad("request_id too long", mut(min, "request_id", strings.Repeat("r", 129)), "/request_id"),
		bad("request_id number", mut(min, "request_id", 7), "/request_id"),
		bad("filters not object", mut(min, "filters", "AR"), "/filters"),
		bad("filters unknown key", mut(min, "filters", obj{"region": "x"}), "'region'"),
		bad("latitude alone", mut(min, "filters", obj{"latitude": 1}), "longitude"),
		bad("longitude alone", mut(min, "filters", obj{"longitude": 1, "latitude": nil}), "latitude"),
		bad("radius without coordinates", mut(min, "filters", obj{"radius_km": 5}), "latitude"),
		bad("radius zero", mut(min, "filters", obj{"latitude": 1, "longitude": 1, "radius_km": 0}), "/filters/radius_km"),
		bad("radius negative", mut(min, "filters", obj{"latitude": 1, "longitude": 1, "radius_km": -1}), "/filters/radius_km"),
		bad("latitude 90.5", mut(min, "filters", obj{"latitude": 90.5, "longitude": 0}), "/filters/latitude"),
		bad("longitude -180.5", mut(min, "filters", obj{"latitude": 0, "longitude": -180.5}), "/filters/longitude"),
		bad("asn fraction", mut(min, "filters", obj{"asn": 1.5}), "/filters/asn"),
		bad("country number", mut(min, "filters", obj{"country": 1}), "/filters/country"),
		bad("all_of not array", mut(min, "filters", obj{"all_of": obj{}}), "/filters/all_of"),
		bad("nested invalid", mut(fullReq, "filters.none_of.0.none_of.0.latitude", 100), "/filters/none_of/0/none_of/0"),
		bad("nested unknown key", mut(fullReq, "filters.all_of.0.town", "x"), "'town'"),
		bad("array body", `[]`, "want object"),
		bad("null body", `null`, "want object"),
	})
}

func TestLeaseRequests(t *testing.T) {
	s := loadSet(t)
	run(t, s, "release.request", []tcase{
		ok("minimal", obj{"lease_id": idLease}),
		ok("consumer", obj{"lease_id": idLease, "consumer_name": "c1"}),
		ok("consumer null", obj{"lease_id": idLease, "consumer_name": nil}),
		bad("missing lease_id", obj{"consumer_name": "c1"}, "missing property 'lease_id'"),
		bad("empty lease_id", obj{"lease_id": ""}, "/lease_id"),
		bad("lease_id number", obj{"lease_id": 1}, "/lease_id"),
		bad("unknown field", obj{"lease_id": idLease, "consumer": "c1"}, "'consumer'"),
		bad("consumer pattern", obj{"lease_id": idLease, "consumer_name": ""}, "/consumer_name"),
	})
	run(t, s, "renew.request", []tcase{
		ok("minimal", obj{"lease_id": idLease, "duration_seconds": 60}),
		ok("consumer", obj{"lease_id": idLease, "duration_seconds": 60, "consumer_name": "c1"}),
		bad("missing duration", obj{"lease_id": idLease}, "missing property 'duration_seconds'"),
		bad("duration 0", obj{"lease_id": idLease, "duration_seconds": 0}, "/duration_seconds"),
		bad("duration too long", obj{"lease_id": idLease, "duration_seconds": 86401}, "/duration_seconds"),
		bad("missing lease_id", obj{"duration_seconds": 60}, "missing property 'lease_id'"),
		bad("unknown field", obj{"lease_id": idLease, "duration_seconds": 60, "ttl": 1}, "'ttl'"),
	})
	run(t, s, "leases_get.request", []tcase{
		ok("id", obj{"lease_id": idLease}),
		bad("missing", obj{}, "missing property 'lease_id'"),
		bad("unknown", obj{"lease_id": idLease, "id": idLease}, "'id'"),
		bad("wrong type", obj{"lease_id": true}, "/lease_id"),
	})
	run(t, s, "stats.request", []tcase{
		ok("pool", obj{"pool_name": "latam"}),
		bad("missing", obj{}, "missing property 'pool_name'"),
		bad("pattern", obj{"pool_name": "la*"}, "/pool_name"),
		bad("unknown", obj{"pool_name": "latam", "pool": "latam"}, "'pool'"),
	})
	for _, name := range []string{"cleanup.request", "pools_list.request", "consumers_list.request"} {
		run(t, s, name, []tcase{
			ok("empty", `{}`),
			bad("any field", obj{"pool_name": "latam"}, "'pool_name'"),
			bad("array", `[]`, "want object"),
			bad("null", `null`, "want object"),
		})
	}
}

func TestPoolRequests(t *testing.T) {
	s := loadSet(t)
	run(t, s, "pools_create.request", []tcase{
		ok("name", obj{"name": "latam"}),
		ok("description", obj{"name": "latam", "description": "LatAm residential"}),
		ok("description null", obj{"name": "latam", "description": nil}),
		bad("missing name", obj{"description": "x"}, "missing property 'name'"),
		bad("name pattern", obj{"name": "lat am"}, "/name"),
		bad("description number", obj{"name": "latam", "description": 1}, "/description"),
		bad("unknown", obj{"name": "latam", "health_check": nil}, "'health_check'"),
	})
	upd := obj{"name": "latam", "health_check": healthCheck()}
	run(t, s, "pools_update.request", []tcase{
		ok("name only", obj{"name": "latam"}),
		ok("clear both", obj{"name": "latam", "description": nil, "health_check": nil}),
		ok("full health check", upd),
		ok("options null", mut(upd, "health_check.options", nil)),
		ok("options absent", mut(upd, "health_check.options", del)),
		ok("options partial", mut(upd, "health_check.options", obj{"target_url": "https://x.test"})),
		ok("options empty", mut(upd, "health_check.options", obj{})),
		ok("options null keys", mut(upd, "health_check.options", obj{"timeout": nil, "headers": nil})),
		bad("missing name", obj{"description": "x"}, "missing property 'name'"),
		bad("health_check not object", obj{"name": "latam", "health_check": true}, "/health_check"),
		bad("missing interval", mut(upd, "health_check.interval_seconds", del), "interval_seconds"),
		bad("missing enabled", mut(upd, "health_check.enabled", del), "enabled"),
		bad("interval 0", mut(upd, "health_check.interval_seconds", 0), "/health_check/interval_seconds"),
		bad("threshold 0", mut(upd, "health_check.failure_threshold", 0), "/health_check/failure_threshold"),
		bad("threshold fraction", mut(upd, "health_check.failure_threshold", 1.5), "/health_check/failure_threshold"),
		bad("enabled string", mut(upd, "health_check.enabled", "yes"), "/health_check/enabled"),
		bad("health_check unknown key", mut(upd, "health_check.interval", 5), "'interval'"),
		bad("timeout 0", mut(upd, "health_check.options.timeout", 0), "/health_check/options/timeout"),
		bad("attempts 6", mut(upd, "health_check.options.attempts", 6), "/health_check/options/attempts"),
		bad("attempts 0", mut(upd, "health_check.options.attempts", 0), "/health_check/options/attempts"),
		bad("status code 99", mut(upd, "health_check.options.expected_status_codes", []any{99}), "/health_check/options/expected_status_codes/0"),
		bad("status code 600", mut(upd, "health_check.options.expected_status_codes", []any{200, 600}), "/health_check/options/expected_status_codes/1"),
		bad("slow threshold negative", mut(upd, "health_check.options.slow_threshold_ms", -1), "/health_check/options/slow_threshold_ms"),
		bad("redirects string", mut(upd, "health_check.options.allow_redirects", "no"), "/health_check/options/allow_redirects"),
		bad("header not string", mut(upd, "health_check.options.headers", obj{"X": 1}), "/health_check/options/headers/X"),
		bad("options unknown key", mut(upd, "health_check.options.method", "GET"), "'method'"),
		bad("unknown", obj{"name": "latam", "force": true}, "'force'"),
	})
	run(t, s, "pools_delete.request", []tcase{
		ok("name", obj{"name": "latam"}),
		ok("force", obj{"name": "latam", "force": true}),
		ok("force null", obj{"name": "latam", "force": nil}),
		bad("force string", obj{"name": "latam", "force": "yes"}, "/force"),
		bad("missing name", obj{"force": true}, "missing property 'name'"),
		bad("unknown", obj{"name": "latam", "cascade": true}, "'cascade'"),
	})
	run(t, s, "consumers_ensure.request", []tcase{
		ok("name", obj{"name": "crawler_1"}),
		bad("missing", obj{}, "missing property 'name'"),
		bad("pattern", obj{"name": "crawler 1"}, "/name"),
		bad("unknown", obj{"name": "c", "id": idCons}, "'id'"),
	})
}

func TestProxyRequests(t *testing.T) {
	s := loadSet(t)
	in := obj{"host": "10.0.0.1", "port": 8080}
	inFull := obj{
		"host": "proxy.example.com", "port": 3128, "protocol": "https", "status": "inactive",
		"credentials": obj{"user": "u", "password": "p"}, "source": "vendor", "country": "AR",
		"city": "Córdoba", "latitude": -31.4, "longitude": -64.2, "isp": "ISP", "asn": 1,
		"max_concurrency": 5,
	}
	add := func(proxies ...any) obj { return obj{"pool_name": "latam", "proxies": proxies} }
	many := func(n int) obj {
		ps := make([]any, n)
		for i := range ps {
			ps[i] = in
		}
		return add(ps...)
	}
	run(t, s, "proxies_add.request", []tcase{
		ok("minimal", add(in)),
		ok("full", add(inFull, in)),
		ok("nulls", add(obj{"host": "h", "port": 1, "protocol": nil, "status": nil, "credentials": nil,
			"source": nil, "country": nil, "city": nil, "latitude": nil, "longitude": nil, "isp": nil,
			"asn": nil, "max_concurrency": nil})),
		ok("1000", many(1000)),
		bad("1001", many(1001), "/proxies"),
		bad("empty", add(), "/proxies"),
		bad("proxies null", obj{"pool_name": "latam", "proxies": nil}, "/proxies"),
		bad("missing proxies", obj{"pool_name": "latam"}, "missing property 'proxies'"),
		bad("missing pool_name", obj{"proxies": []any{in}}, "missing property 'pool_name'"),
		bad("unknown top-level", mut(add(in), "pool", "latam"), "'pool'"),
		bad("missing host", add(obj{"port": 1}), "missing property 'host'"),
		bad("empty host", add(obj{"host": "", "port": 1}), "/proxies/0/host"),
		bad("missing port", add(obj{"host": "h"}), "missing property 'port'"),
		bad("port 0", add(mut(in, "port", 0)), "/proxies/0/port"),
		bad("port 65536", add(in, mut(in, "port", 65536)), "/proxies/1/port"),
		bad("port string", add(mut(in, "port", "80")), "/proxies/0/port"),
		bad("protocol", add(mut(in, "protocol", "ftp")), "/proxies/0/protocol"),
		bad("status", add(mut(in, "status", "dead")), "/proxies/0/status"),
		bad("credentials missing password", add(mut(in, "credentials", obj{"user": "u"})), "password"),
		bad("credentials extra", add(mut(in, "credentials", obj{"user": "u", "password": "p", "token": "t"})), "'token'"),
		bad("credentials string", add(mut(in, "credentials", "u:p")), "/proxies/0/credentials"),
		bad("max_concurrency 0", add(mut(in, "max_concurrency", 0)), "/proxies/0/max_concurrency"),
		bad("max_concurrency fraction", add(mut(in, "max_concurrency", 1.5)), "/proxies/0/max_concurrency"),
		bad("latitude", add(mut(in, "latitude", -91)), "/proxies/0/latitude"),
		bad("longitude", add(mut(in, "longitude", 181)), "/proxies/0/longitude"),
		bad("asn", add(mut(in, "asn", "AS1")), "/proxies/0/asn"),
		bad("unknown proxy field", add(mut(in, "hostname", "h")), "'hostname'"),
		bad("read-only field", add(mut(in, "id", idProxy)), "'id'"),
	})
	run(t, s, "proxies_list.request", []tcase{
		ok("minimal", obj{"pool_name": "latam"}),
		ok("all", obj{"pool_name": "latam", "status": "banned", "limit": 1000, "cursor": "abc"}),
		ok("nulls", obj{"pool_name": "latam", "status": nil, "limit": nil, "cursor": nil}),
		bad("limit 0", obj{"pool_name": "latam", "limit": 0}, "/limit"),
		bad("limit 1001", obj{"pool_name": "latam", "limit": 1001}, "/limit"),
		bad("limit string", obj{"pool_name": "latam", "limit": "10"}, "/limit"),
		bad("status", obj{"pool_name": "latam", "status": "up"}, "/status"),
		bad("cursor number", obj{"pool_name": "latam", "cursor": 5}, "/cursor"),
		bad("missing pool_name", obj{"limit": 5}, "missing property 'pool_name'"),
		bad("unknown", obj{"pool_name": "latam", "offset": 5}, "'offset'"),
	})
	run(t, s, "proxies_get.request", []tcase{
		ok("id", obj{"proxy_id": idProxy}),
		bad("missing", obj{}, "missing property 'proxy_id'"),
		bad("unknown", obj{"proxy_id": idProxy, "pool_name": "latam"}, "'pool_name'"),
		bad("wrong type", obj{"proxy_id": 1}, "/proxy_id"),
	})
	upd := obj{"proxy_id": idProxy}
	run(t, s, "proxies_update.request", []tcase{
		ok("id only", upd),
		ok("every field", mut(inFull, "proxy_id", idProxy)),
		ok("clear nullables", obj{"proxy_id": idProxy, "credentials": nil, "source": nil, "country": nil,
			"city": nil, "latitude": nil, "longitude": nil, "isp": nil, "asn": nil, "max_concurrency": nil}),
		bad("missing proxy_id", obj{"status": "banned"}, "missing property 'proxy_id'"),
		bad("host null", mut(upd, "host", nil), "/host"),
		bad("port null", mut(upd, "port", nil), "/port"),
		bad("protocol null", mut(upd, "protocol", nil), "/protocol"),
		bad("status null", mut(upd, "status", nil), "/status"),
		bad("status unknown", mut(upd, "status", "dead"), "/status"),
		bad("port range", mut(upd, "port", 70000), "/port"),
		bad("max_concurrency 0", mut(upd, "max_concurrency", 0), "/max_concurrency"),
		bad("latitude range", mut(upd, "latitude", 200), "/latitude"),
		bad("not writable pool_name", mut(upd, "pool_name", "other"), "'pool_name'"),
		bad("not writable current_leases", mut(upd, "current_leases", 0), "'current_leases'"),
		bad("typo", mut(upd, "max_concurency", 1), "'max_concurency'"),
	})
	run(t, s, "proxies_delete.request", []tcase{
		ok("id", obj{"proxy_id": idProxy}),
		ok("force", obj{"proxy_id": idProxy, "force": true}),
		bad("missing", obj{"force": true}, "missing property 'proxy_id'"),
		bad("force number", obj{"proxy_id": idProxy, "force": 1}, "/force"),
		bad("unknown", obj{"proxy_id": idProxy, "hard": true}, "'hard'"),
	})
}

func TestHealthRequests(t *testing.T) {
	s := loadSet(t)
	run(t, s, "health_check.request", []tcase{
		ok("proxy", obj{"proxy_id": idProxy}),
		ok("pool", obj{"pool_name": "latam"}),
		ok("pool with limit", obj{"pool_name": "latam", "limit": 10}),
		ok("limit null with proxy", obj{"proxy_id": idProxy, "limit": nil}),
		ok("options", obj{"proxy_id": idProxy, "options": hcOptions()}),
		ok("partial options", obj{"pool_name": "latam", "options": obj{"timeout": 1.5}}),
		ok("options null", obj{"pool_name": "latam", "options": nil}),
		bad("neither", obj{}, "oneOf"),
		bad("only limit", obj{"limit": 5}, "pool_name"),
		bad("both", obj{"proxy_id": idProxy, "pool_name": "latam"}, "oneOf"),
		bad("limit with proxy", obj{"proxy_id": idProxy, "limit": 5}, "pool_name"),
		bad("limit 0", obj{"pool_name": "latam", "limit": 0}, "/limit"),
		bad("pool pattern", obj{"pool_name": "a b"}, "/pool_name"),
		bad("bad options", obj{"proxy_id": idProxy, "options": obj{"attempts": 9}}, "/options/attempts"),
		bad("unknown", obj{"proxy_id": idProxy, "force": true}, "'force'"),
	})
	min := obj{"proxy_id": idProxy, "status": "slow", "latency_ms": 2500.5, "protocol": "http"}
	run(t, s, "health_apply.request", []tcase{
		ok("minimal", min),
		ok("full", obj{"proxy_id": idProxy, "status": "inactive", "latency_ms": 0, "protocol": "socks4",
			"attempts": 5, "status_code": 503, "checked_at": ts2, "error_message": "timeout"}),
		ok("offset checked_at", mut(min, "checked_at", "2024-05-01T12:00:00+02:00")),
		ok("nulls", obj{"proxy_id": idProxy, "status": "active", "latency_ms": 1, "protocol": "https",
			"attempts": nil, "status_code": nil, "checked_at": nil, "error_message": nil}),
		ok("banned", mut(min, "status", "banned")),
		bad("missing latency", mut(min, "latency_ms", del), "missing property 'latency_ms'"),
		bad("missing status", mut(min, "status", del), "missing property 'status'"),
		bad("missing protocol", mut(min, "protocol", del), "missing property 'protocol'"),
		bad("missing proxy_id", mut(min, "proxy_id", del), "missing property 'proxy_id'"),
		bad("latency negative", mut(min, "latency_ms", -1), "/latency_ms"),
		bad("latency string", mut(min, "latency_ms", "5"), "/latency_ms"),
		bad("status unknown", mut(min, "status", "up"), "/status"),
		bad("protocol unknown", mut(min, "protocol", "quic"), "/protocol"),
		bad("attempts 0", mut(min, "attempts", 0), "/attempts"),
		bad("attempts 6", mut(min, "attempts", 6), "/attempts"),
		bad("status_code string", mut(min, "status_code", "200"), "/status_code"),
		bad("checked_at garbage", mut(min, "checked_at", "yesterday"), "/checked_at"),
		bad("checked_at no zone", mut(min, "checked_at", "2024-05-01T10:00:00"), "/checked_at"),
		bad("error_message number", mut(min, "error_message", 1), "/error_message"),
		bad("unknown", mut(min, "latency", 5), "'latency'"),
	})
}

// ---------------------------------------------------------------- models

func TestModels(t *testing.T) {
	s := loadSet(t)
	run(t, s, "proxy", []tcase{
		ok("nulls", proxyNulls()),
		ok("full", proxyFull()),
		bad("omitted nullable key", mut(proxyNulls(), "asn", del), "missing property 'asn'"),
		bad("omitted checked_at", mut(proxyNulls(), "checked_at", del), "missing property 'checked_at'"),
		bad("non-Z checked_at", mut(proxyFull(), "checked_at", "2024-05-01T10:00:00+00:00"), "/checked_at"),
		bad("unknown", mut(proxyNulls(), "pool", "latam"), "'pool'"),
		bad("id uppercase", mut(proxyNulls(), "id", strings.ToUpper(idProxy)), "/id"),
		bad("pool_id not uuid", mut(proxyNulls(), "pool_id", "latam"), "/pool_id"),
		bad("port 0", mut(proxyNulls(), "port", 0), "/port"),
		bad("status", mut(proxyNulls(), "status", "dead"), "/status"),
		bad("protocol null", mut(proxyNulls(), "protocol", nil), "/protocol"),
		bad("current_leases negative", mut(proxyNulls(), "current_leases", -1), "/current_leases"),
		bad("current_leases null", mut(proxyNulls(), "current_leases", nil), "/current_leases"),
		bad("max_concurrency 0", mut(proxyNulls(), "max_concurrency", 0), "/max_concurrency"),
		bad("latitude range", mut(proxyFull(), "latitude", 91), "/latitude"),
		bad("credentials partial", mut(proxyFull(), "credentials", obj{"user": "u"}), "password"),
		bad("url scheme", mut(proxyNulls(), "url", "10.0.0.1:8080"), "/url"),
		bad("url null", mut(proxyNulls(), "url", nil), "/url"),
	})
	run(t, s, "lease", []tcase{
		ok("active", leaseActive()),
		ok("released", leaseReleased()),
		ok("expired unmarked", leaseExpired()),
		ok("expired with released_at", mut(leaseExpired(), "released_at", ts2)),
		ok("fencing 0", mut(leaseActive(), "fencing_token", 0)),
		ok("fencing uint64 max", strings.Replace(js(leaseActive()), `"fencing_token":7`, `"fencing_token":18446744073709551615`, 1)),
		bad("omitted released_at", mut(leaseActive(), "released_at", del), "missing property 'released_at'"),
		bad("omitted fencing_token", mut(leaseActive(), "fencing_token", del), "missing property 'fencing_token'"),
		bad("non-Z acquired_at", mut(leaseActive(), "acquired_at", "2024-05-01T12:00:00+02:00"), "/acquired_at"),
		bad("expires_at date only", mut(leaseActive(), "expires_at", "2024-05-01"), "/expires_at"),
		bad("fencing negative", mut(leaseActive(), "fencing_token", -1), "/fencing_token"),
		bad("fencing fraction", mut(leaseActive(), "fencing_token", 1.5), "/fencing_token"),
		bad("fencing over uint64", strings.Replace(js(leaseActive()), `"fencing_token":7`, `"fencing_token":18446744073709551616`, 1), "/fencing_token"),
		bad("status", mut(leaseActive(), "status", "revoked"), "/status"),
		bad("active with released_at", mut(leaseActive(), "released_at", ts2), "/released_at"),
		bad("released without released_at", mut(leaseActive(), "status", "released"), "/released_at"),
		bad("consumer_name pattern", mut(leaseActive(), "consumer_name", "a b"), "/consumer_name"),
		bad("pool_name pattern", mut(leaseActive(), "pool_name", ""), "/pool_name"),
		bad("consumer_id not v4", mut(leaseActive(), "consumer_id", "3e4f5a6b-7c8d-1e9f-a01b-2c3d4e5f6071"), "/consumer_id"),
		bad("unknown", mut(leaseActive(), "ttl", 5), "'ttl'"),
	})
	run(t, s, "pool_stats", []tcase{
		ok("full", poolStats()),
		bad("negative", mut(poolStats(), "total_leases", -1), "/total_leases"),
		bad("fraction", mut(poolStats(), "leased_proxies", 0.5), "/leased_proxies"),
		bad("omitted", mut(poolStats(), "collected_at", del), "missing property 'collected_at'"),
		bad("non-Z", mut(poolStats(), "collected_at", "2024-05-01T10:00:00"), "/collected_at"),
		bad("unknown", mut(poolStats(), "pool_id", idPool), "'pool_id'"),
	})
	run(t, s, "consumer", []tcase{
		ok("full", obj{"id": idCons, "name": "default"}),
		bad("omitted id", obj{"name": "default"}, "missing property 'id'"),
		bad("name pattern", obj{"id": idCons, "name": "a b"}, "/name"),
		bad("unknown", obj{"id": idCons, "name": "d", "leases": 0}, "'leases'"),
	})
	withHC := mut(pool(), "health_check", healthCheck())
	run(t, s, "proxy_pool", []tcase{
		ok("no health check", pool()),
		ok("described", mut(pool(), "description", "LatAm")),
		ok("health check", withHC),
		ok("health check without options", mut(withHC, "health_check.options", nil)),
		ok("empty headers and codes", mut(mut(withHC, "health_check.options.headers", obj{}), "health_check.options.expected_status_codes", []any{})),
		bad("omitted description", mut(pool(), "description", del), "missing property 'description'"),
		bad("omitted health_check", mut(pool(), "health_check", del), "missing property 'health_check'"),
		bad("omitted options", mut(withHC, "health_check.options", del), "options"),
		bad("omitted option key", mut(withHC, "health_check.options.headers", del), "headers"),
		bad("null option key", mut(withHC, "health_check.options.expected_status_codes", nil), "/health_check/options/expected_status_codes"),
		bad("null timeout", mut(withHC, "health_check.options.timeout", nil), "/health_check/options/timeout"),
		bad("interval 0", mut(withHC, "health_check.interval_seconds", 0), "/health_check/interval_seconds"),
		bad("id", mut(pool(), "id", "latam"), "/id"),
		bad("unknown", mut(pool(), "proxies", []any{}), "'proxies'"),
	})
	run(t, s, "health_check", []tcase{
		ok("full", healthCheck()),
		bad("omitted options", mut(healthCheck(), "options", del), "missing property 'options'"),
		bad("partial options", mut(healthCheck(), "options", obj{"timeout": 1}), "target_url"),
	})
	run(t, s, "health_check_options", []tcase{
		ok("full", hcOptions()),
		bad("omitted", mut(hcOptions(), "allow_redirects", del), "missing property 'allow_redirects'"),
		bad("null headers", mut(hcOptions(), "headers", nil), "/headers"),
		bad("attempts", mut(hcOptions(), "attempts", 6), "/attempts"),
		bad("unknown", mut(hcOptions(), "method", "GET"), "'method'"),
	})
	run(t, s, "health_check_result", []tcase{
		ok("full", hcResult()),
		ok("failed", mut(mut(mut(hcResult(), "status", "inactive"), "status_code", nil), "error_message", "refused")),
		bad("omitted status_code", mut(hcResult(), "status_code", del), "missing property 'status_code'"),
		bad("omitted error_message", mut(hcResult(), "error_message", del), "missing property 'error_message'"),
		bad("offset checked_at", mut(hcResult(), "checked_at", "2024-05-01T12:00:00+02:00"), "/checked_at"),
		bad("attempts 0", mut(hcResult(), "attempts", 0), "/attempts"),
		bad("latency negative", mut(hcResult(), "latency_ms", -1), "/latency_ms"),
		bad("status", mut(hcResult(), "status", "ok"), "/status"),
	})
	nested := mut(mut(filtersNull(), "country", "AR"), "any_of", []any{mut(mut(mut(filtersNull(),
		"latitude", 1.0), "longitude", 2.0), "radius_km", 10)})
	run(t, s, "proxy_filters", []tcase{
		ok("all null", filtersNull()),
		ok("nested", nested),
		ok("empty lists", mut(mut(filtersNull(), "all_of", []any{}), "none_of", []any{})),
		bad("omitted key", mut(filtersNull(), "radius_km", del), "missing property 'radius_km'"),
		bad("request form", obj{"country": "AR"}, "missing properties"),
		bad("nested request form", mut(filtersNull(), "all_of", []any{obj{"city": "x"}}), "/all_of/0"),
		bad("latitude alone", mut(filtersNull(), "latitude", 1), "longitude"),
		bad("radius alone", mut(filtersNull(), "radius_km", 1), "latitude"),
		bad("nested invalid", mut(nested, "any_of.0.radius_km", 0), "/any_of/0/radius_km"),
		bad("unknown", mut(filtersNull(), "region", nil), "'region'"),
	})
	run(t, s, "credentials", []tcase{
		ok("full", obj{"user": "u", "password": ""}),
		bad("missing user", obj{"password": "p"}, "missing property 'user'"),
		bad("user null", obj{"user": nil, "password": "p"}, "/user"),
	})
	var codes []tcase
	for _, code := range []string{"bad_request", "forbidden", "pool_not_found", "lease_not_found",
		"proxy_not_found", "conflict", "lease_not_active", "payload_too_large", "unavailable", "internal"} {
		codes = append(codes, ok(code, obj{"error": obj{"code": code, "message": "m"}}))
	}
	run(t, s, "error", append(codes,
		bad("unknown code", obj{"error": obj{"code": "not_found", "message": "m"}}, "/error/code"),
		bad("missing message", obj{"error": obj{"code": "internal"}}, "missing property 'message'"),
		bad("numeric code", obj{"error": obj{"code": 404, "message": "m"}}, "/error/code"),
		bad("extra inner", obj{"error": obj{"code": "internal", "message": "m", "status": 500}}, "'status'"),
		bad("extra outer", obj{"error": obj{"code": "internal", "message": "m"}, "ok": false}, "'ok'"),
		bad("flat", obj{"code": "internal", "message": "m"}, "missing property 'error'"),
	))
}

// ---------------------------------------------------------------- replies

func TestReplies(t *testing.T) {
	s := loadSet(t)
	run(t, s, "acquire.reply", []tcase{
		ok("leased", obj{"lease": leaseActive(), "proxy": proxyFull()}),
		ok("none free", obj{"lease": nil, "proxy": nil}),
		bad("lease without proxy", obj{"lease": leaseActive(), "proxy": nil}, "oneOf"),
		bad("proxy without lease", obj{"lease": nil, "proxy": proxyNulls()}, "oneOf"),
		bad("omitted proxy", obj{"lease": nil}, "missing property 'proxy'"),
		bad("empty", obj{}, "missing properties"),
		bad("released lease", obj{"lease": leaseReleased(), "proxy": proxyFull()}, "/lease/status"),
		bad("invalid nested proxy", obj{"lease": leaseActive(), "proxy": mut(proxyFull(), "url", del)}, "/proxy"),
		bad("non-Z lease timestamp", obj{"lease": mut(leaseActive(), "expires_at", "2024-05-01T10:00:00.5+00:00"), "proxy": proxyFull()}, "/lease/expires_at"),
		bad("unknown", obj{"lease": nil, "proxy": nil, "reason": "none"}, "'reason'"),
	})
	run(t, s, "lease.reply", []tcase{
		ok("active", obj{"lease": leaseActive()}),
		ok("released", obj{"lease": leaseReleased()}),
		ok("expired", obj{"lease": leaseExpired()}),
		bad("null", obj{"lease": nil}, "/lease"),
		bad("omitted", obj{}, "missing property 'lease'"),
		bad("omitted lease key", obj{"lease": mut(leaseActive(), "pool_id", del)}, "pool_id"),
		bad("bare lease", leaseActive(), "missing property 'lease'"),
	})
	run(t, s, "cleanup.reply", []tcase{
		ok("zero", obj{"released": 0}),
		ok("some", obj{"released": 12}),
		bad("negative", obj{"released": -1}, "/released"),
		bad("fraction", obj{"released": 1.5}, "/released"),
		bad("omitted", obj{}, "missing property 'released'"),
		bad("renamed", obj{"expired": 1}, "'expired'"),
	})
	run(t, s, "pools_list.reply", []tcase{
		ok("empty", obj{"pools": []any{}}),
		ok("some", obj{"pools": []any{pool(), mut(pool(), "health_check", healthCheck())}}),
		bad("null", obj{"pools": nil}, "/pools"),
		bad("omitted", obj{}, "missing property 'pools'"),
		bad("bad item", obj{"pools": []any{mut(pool(), "description", del)}}, "/pools/0"),
	})
	run(t, s, "proxies_add.reply", []tcase{
		ok("one", obj{"proxies": []any{proxyNulls()}}),
		bad("empty", obj{"proxies": []any{}}, "/proxies"),
		bad("bad item", obj{"proxies": []any{proxyNulls(), mut(proxyNulls(), "city", del)}}, "/proxies/1"),
	})
	run(t, s, "proxies_list.reply", []tcase{
		ok("last page", obj{"proxies": []any{proxyNulls(), proxyFull()}, "next_cursor": nil}),
		ok("empty", obj{"proxies": []any{}, "next_cursor": nil}),
		ok("more", obj{"proxies": []any{proxyNulls()}, "next_cursor": "abc"}),
		bad("omitted cursor", obj{"proxies": []any{}}, "missing property 'next_cursor'"),
		bad("cursor number", obj{"proxies": []any{}, "next_cursor": 2}, "/next_cursor"),
		bad("proxies null", obj{"proxies": nil, "next_cursor": nil}, "/proxies"),
	})
	run(t, s, "deleted.reply", []tcase{
		ok("true", obj{"deleted": true}),
		bad("false", obj{"deleted": false}, "/deleted"),
		bad("omitted", obj{}, "missing property 'deleted'"),
	})
	run(t, s, "consumers_list.reply", []tcase{
		ok("some", obj{"consumers": []any{obj{"id": idCons, "name": "default"}}}),
		bad("bad item", obj{"consumers": []any{obj{"id": idCons}}}, "/consumers/0"),
		bad("null", obj{"consumers": nil}, "/consumers"),
	})
	run(t, s, "health_check.reply", []tcase{
		ok("some", obj{"results": []any{hcResult()}}),
		ok("none", obj{"results": []any{}}),
		bad("bad item", obj{"results": []any{mut(hcResult(), "checked_at", del)}}, "/results/0"),
		bad("omitted", obj{}, "missing property 'results'"),
	})
}

// ---------------------------------------------------------------- events

func TestEvents(t *testing.T) {
	s := loadSet(t)
	acq := acquiredEvent()
	failed := mut(acq, "lease", nil)
	run(t, s, "event.acquired", []tcase{
		ok("no filters", acq),
		ok("filters", mut(acq, "filters", mut(mut(mut(filtersNull(), "latitude", 1), "longitude", 2), "none_of",
			[]any{mut(filtersNull(), "isp", "x")}))),
		bad("lease null", failed, "/lease"),
		bad("lease released", mut(acq, "lease", leaseReleased()), "/lease/status"),
		bad("omitted filters", mut(acq, "filters", del), "missing property 'filters'"),
		bad("omitted pool_stats", mut(acq, "pool_stats", del), "missing property 'pool_stats'"),
		bad("pool_stats null", mut(acq, "pool_stats", nil), "/pool_stats"),
		bad("filters request form", mut(acq, "filters", obj{"country": "AR"}), "/filters"),
		bad("selector", mut(acq, "selector", "fastest"), "/selector"),
		bad("selector null", mut(acq, "selector", nil), "/selector"),
		bad("non-Z", mut(acq, "started_at", "2024-05-01T10:00:00+00:00"), "/started_at"),
		bad("duration negative", mut(acq, "duration_ms", -1), "/duration_ms"),
		bad("consumer_name pattern", mut(acq, "consumer_name", ""), "/consumer_name"),
		bad("unknown", mut(acq, "proxy", proxyNulls()), "'proxy'"),
	})
	run(t, s, "event.acquire_failed", []tcase{
		ok("no lease", failed),
		ok("with filters", mut(failed, "filters", mut(filtersNull(), "country", "AR"))),
		bad("with lease", acq, "/lease"),
		bad("omitted lease", mut(failed, "lease", del), "missing property 'lease'"),
		bad("omitted completed_at", mut(failed, "completed_at", del), "missing property 'completed_at'"),
	})
	run(t, s, "event.acquire", []tcase{
		ok("acquired", acq),
		ok("failed", failed),
		bad("omitted selector", mut(acq, "selector", del), "missing property 'selector'"),
	})
	rel := obj{"lease": leaseReleased(), "pool_name": "latam", "released_at": ts2,
		"lease_duration_ms": 300000, "pool_stats": poolStats(), "outcome": nil, "reason": nil}
	run(t, s, "event.released", []tcase{
		ok("full", rel),
		bad("lease active", mut(rel, "lease", leaseActive()), "/lease/status"),
		bad("lease null", mut(rel, "lease", nil), "/lease"),
		bad("omitted duration", mut(rel, "lease_duration_ms", del), "missing property 'lease_duration_ms'"),
		bad("non-Z", mut(rel, "released_at", "2024-05-01T10:00:00"), "/released_at"),
		bad("unknown", mut(rel, "consumer_name", "c"), "'consumer_name'"),
	})
	exp := obj{"lease": leaseExpired(), "pool_name": "latam", "expired_at": ts2, "pool_stats": poolStats()}
	run(t, s, "event.expired", []tcase{
		ok("full", exp),
		bad("lease active", mut(exp, "lease", leaseActive()), "/lease/status"),
		bad("omitted expired_at", mut(exp, "expired_at", del), "missing property 'expired_at'"),
		bad("bad stats", mut(exp, "pool_stats", mut(poolStats(), "total_proxies", -1)), "/pool_stats/total_proxies"),
	})
	ren := obj{"lease": leaseActive(), "pool_name": "latam", "previous_expires_at": ts1}
	run(t, s, "event.renewed", []tcase{
		ok("full", ren),
		bad("lease expired", mut(ren, "lease", leaseExpired()), "/lease/status"),
		bad("omitted previous", mut(ren, "previous_expires_at", del), "missing property 'previous_expires_at'"),
		bad("pool_stats not part of it", mut(ren, "pool_stats", poolStats()), "'pool_stats'"),
	})
	hl := obj{"proxy_id": idProxy, "pool_name": "latam", "previous_status": "active", "result": hcResult()}
	run(t, s, "event.health", []tcase{
		ok("full", hl),
		bad("previous status", mut(hl, "previous_status", "up"), "/previous_status"),
		bad("result omitted key", mut(hl, "result.status_code", del), "/result"),
		bad("proxy_id", mut(hl, "proxy_id", "p1"), "/proxy_id"),
		bad("omitted pool_name", mut(hl, "pool_name", del), "missing property 'pool_name'"),
	})
}
