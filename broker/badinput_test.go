package broker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/model"
)

// badCase is one refused request.
type badCase struct {
	op     string
	name   string
	body   []byte
	status int
	code   string
	// schemaBlind: a JSON Schema cannot refuse it (size, encoding).
	schemaBlind bool
	contains    string
}

// badInputFixture is the state bad requests must leave alone.
type badInputFixture struct {
	proxyID, otherProxyID string
	activeLease           string
	releasedLease         string
}

// validBodies is one accepted request per operation, used as the base of
// the generic bad cases (unknown field, trailing data, padding).
func validBodies(f badInputFixture) map[string]string {
	return map[string]string{
		"acquire":                `{"pool_name":"bi","consumer_name":"probe","duration_seconds":60}`,
		"release":                `{"lease_id":"` + f.releasedLease + `"}`,
		"renew":                  `{"lease_id":"` + f.activeLease + `","duration_seconds":600,"consumer_name":"owner"}`,
		"leases.get":             `{"lease_id":"` + f.activeLease + `"}`,
		"cleanup":                `{}`,
		"stats":                  `{"pool_name":"bi"}`,
		"admin.pools.create":     `{"name":"bi2"}`,
		"admin.pools.list":       `{}`,
		"admin.pools.update":     `{"name":"bi","description":"changed"}`,
		"admin.pools.delete":     `{"name":"bi","force":true}`,
		"admin.proxies.add":      `{"pool_name":"bi","proxies":[{"host":"new","port":9}]}`,
		"admin.proxies.list":     `{"pool_name":"bi"}`,
		"admin.proxies.get":      `{"proxy_id":"` + f.proxyID + `"}`,
		"admin.proxies.update":   `{"proxy_id":"` + f.proxyID + `","city":"changed"}`,
		"admin.proxies.delete":   `{"proxy_id":"` + f.otherProxyID + `","force":true}`,
		"admin.consumers.ensure": `{"name":"newcomer"}`,
		"admin.consumers.list":   `{}`,
		"admin.health.apply":     `{"proxy_id":"` + f.proxyID + `","status":"banned","latency_ms":1,"protocol":"http"}`,
		"admin.health.last":      `{"proxy_id":"` + f.proxyID + `"}`,
	}
}

// firstMember is the name and value of an object's first member.
func firstMember(obj string) (string, string) {
	dec := jsontext.NewDecoder(strings.NewReader(obj))
	if _, err := dec.ReadToken(); err != nil {
		panic(err)
	}
	tok, err := dec.ReadToken()
	if err != nil {
		panic(err)
	}
	key := tok.String() // before the next read voids it
	value, err := dec.ReadValue()
	if err != nil {
		panic(err)
	}
	return key, string(value)
}

// withField inserts `"key":value` as the first member of a JSON object.
func withField(obj, key, value string) string {
	if obj == "{}" {
		return `{"` + key + `":` + value + `}`
	}
	return `{"` + key + `":` + value + `,` + obj[1:]
}

func badCases(f badInputFixture) []badCase {
	var cases []badCase
	add := func(op, name, body string, contains ...string) {
		c := badCase{op: op, name: name, body: []byte(body), status: 400, code: "bad_request"}
		if len(contains) > 0 {
			c.contains = contains[0]
		}
		cases = append(cases, c)
	}
	valid := validBodies(f)

	// Generic cases for every operation.
	for op, good := range valid {
		add(op, "malformed JSON", good[:len(good)-1], "malformed JSON")
		add(op, "malformed JSON key", `{pool_name:"bi"}`)
		add(op, "not JSON", `hello`)
		add(op, "array body", `[]`)
		add(op, "null body", `null`)
		add(op, "string body", `"x"`)
		add(op, "number body", `42`)
		add(op, "unknown field", withField(good, "bogus_field", "1"), `"bogus_field"`)
		// Names match exactly and once: encoding/json would take either
		// of these as the known field.
		if good == "{}" {
			// No field to spell otherwise: both are unknown fields here.
			add(op, "field name in another case", `{"POOL_NAME":"bi"}`, `"POOL_NAME"`)
			cases = append(cases, badCase{op: op, name: "duplicate field", body: []byte(`{"pool_name":"bi","pool_name":"bi"}`),
				status: 400, code: "bad_request", schemaBlind: true, contains: `"pool_name"`})
		} else {
			key, value := firstMember(good)
			add(op, "field name in another case", strings.Replace(good, `"`+key+`"`, `"`+strings.ToUpper(key)+`"`, 1), `"`+strings.ToUpper(key)+`"`)
			cases = append(cases, badCase{op: op, name: "duplicate field", body: []byte(withField(good, key, value)),
				status: 400, code: "bad_request", schemaBlind: true, contains: `duplicate field "` + key + `"`})
		}
		add(op, "trailing data", good+` {}`)
		cases = append(cases, badCase{op: op, name: "invalid UTF-8", body: []byte(withField(good, "x\xffy", "1")),
			status: 400, code: "bad_request", schemaBlind: true, contains: "UTF-8"})
		cases = append(cases, badCase{op: op, name: "invalid UTF-8 value", body: []byte("{\"pool_name\":\"b\xc3\x28\"}"),
			status: 400, code: "bad_request", schemaBlind: true, contains: "UTF-8"})
		limit := broker.MaxBody
		if op == "admin.proxies.add" {
			limit = broker.MaxProxiesBody
		}
		cases = append(cases, badCase{op: op, name: "oversize", body: []byte(good + strings.Repeat(" ", limit+1-len(good))),
			status: 413, code: "payload_too_large", schemaBlind: true, contains: fmt.Sprint(limit)})
		cases = append(cases, badCase{op: op, name: "far oversize", body: []byte(withField(good, "pad", `"`+strings.Repeat("x", 2*limit)+`"`)),
			status: 413, code: "payload_too_large", schemaBlind: true})
	}
	// A 64 KiB+ body is fine for proxies.add only; other operations refuse it.
	add("admin.proxies.list", "proxies.add-sized body elsewhere", `{"pool_name":"bi"}`)
	cases[len(cases)-1].body = []byte(`{"pool_name":"bi"}` + strings.Repeat(" ", broker.MaxBody))
	cases[len(cases)-1].status, cases[len(cases)-1].code, cases[len(cases)-1].schemaBlind = 413, "payload_too_large", true

	// acquire
	add("acquire", "pool_name wrong type", `{"pool_name":5}`, "pool_name")
	add("acquire", "pool_name missing", `{"consumer_name":"x"}`, "pool_name")
	add("acquire", "pool_name empty", `{"pool_name":""}`, "pool_name")
	add("acquire", "pool_name pattern", `{"pool_name":"b i"}`, "pool_name")
	add("acquire", "pool_name too long", `{"pool_name":"`+strings.Repeat("p", 129)+`"}`, "pool_name")
	add("acquire", "consumer_name pattern", `{"pool_name":"bi","consumer_name":"a.b"}`, "consumer_name")
	add("acquire", "consumer_name wrong type", `{"pool_name":"bi","consumer_name":["a"]}`, "consumer_name")
	add("acquire", "duration_seconds 0", `{"pool_name":"bi","duration_seconds":0}`, "duration_seconds")
	add("acquire", "duration_seconds 86401", `{"pool_name":"bi","duration_seconds":86401}`, "duration_seconds")
	add("acquire", "duration_seconds negative", `{"pool_name":"bi","duration_seconds":-5}`, "duration_seconds")
	add("acquire", "duration_seconds string", `{"pool_name":"bi","duration_seconds":"60"}`, "duration_seconds")
	add("acquire", "duration_seconds fraction", `{"pool_name":"bi","duration_seconds":1.5}`, "duration_seconds")
	add("acquire", "duration_seconds huge", `{"pool_name":"bi","duration_seconds":1e30}`, "duration_seconds")
	add("acquire", "wait_seconds 61", `{"pool_name":"bi","wait_seconds":61}`, "wait_seconds")
	add("acquire", "wait_seconds negative", `{"pool_name":"bi","wait_seconds":-0.5}`, "wait_seconds")
	add("acquire", "wait_seconds string", `{"pool_name":"bi","wait_seconds":"1"}`, "wait_seconds")
	add("acquire", "selector enum", `{"pool_name":"bi","selector":"fastest"}`, "selector")
	add("acquire", "selector case", `{"pool_name":"bi","selector":"First_Available"}`, "selector")
	add("acquire", "selector wrong type", `{"pool_name":"bi","selector":1}`, "selector")
	add("acquire", "request_id too long", `{"pool_name":"bi","request_id":"`+strings.Repeat("r", 129)+`"}`, "request_id")
	add("acquire", "request_id wrong type", `{"pool_name":"bi","request_id":7}`, "request_id")
	add("acquire", "filters wrong type", `{"pool_name":"bi","filters":"AR"}`, "filters")
	add("acquire", "filters latitude 91", `{"pool_name":"bi","filters":{"latitude":91,"longitude":0}}`, "latitude")
	add("acquire", "filters latitude -91", `{"pool_name":"bi","filters":{"latitude":-91,"longitude":0}}`, "latitude")
	add("acquire", "filters longitude 181", `{"pool_name":"bi","filters":{"latitude":0,"longitude":181}}`, "longitude")
	add("acquire", "filters latitude alone", `{"pool_name":"bi","filters":{"latitude":10}}`, "latitude")
	add("acquire", "filters longitude alone", `{"pool_name":"bi","filters":{"longitude":10}}`, "longitude")
	add("acquire", "filters radius_km 0", `{"pool_name":"bi","filters":{"latitude":0,"longitude":0,"radius_km":0}}`, "radius_km")
	add("acquire", "filters radius_km negative", `{"pool_name":"bi","filters":{"latitude":0,"longitude":0,"radius_km":-1}}`, "radius_km")
	add("acquire", "filters radius_km without coordinates", `{"pool_name":"bi","filters":{"radius_km":10}}`, "radius_km")
	add("acquire", "filters asn wrong type", `{"pool_name":"bi","filters":{"asn":"AS1"}}`, "asn")
	add("acquire", "filters asn fraction", `{"pool_name":"bi","filters":{"asn":1.5}}`, "asn")
	add("acquire", "filters all_of not a list", `{"pool_name":"bi","filters":{"all_of":{"country":"AR"}}}`, "all_of")
	add("acquire", "filters nested unknown field", `{"pool_name":"bi","filters":{"any_of":[{"contry":"AR"}]}}`, `"contry"`)
	add("acquire", "filters nested out of range", `{"pool_name":"bi","filters":{"none_of":[{"all_of":[{"latitude":95,"longitude":1}]}]}}`, "latitude")
	add("acquire", "filters nested radius alone", `{"pool_name":"bi","filters":{"any_of":[{"radius_km":3}]}}`, "radius_km")

	// release, renew, leases.get
	add("release", "lease_id missing", `{}`, "lease_id")
	add("release", "lease_id wrong type", `{"lease_id":5}`, "lease_id")
	add("release", "lease_id null", `{"lease_id":null}`, "lease_id")
	add("release", "lease_id empty", `{"lease_id":""}`, "lease_id")
	add("release", "consumer_name pattern", `{"lease_id":"`+f.activeLease+`","consumer_name":"no spaces"}`, "consumer_name")
	add("release", "consumer_name wrong type", `{"lease_id":"`+f.activeLease+`","consumer_name":1}`, "consumer_name")
	add("renew", "duration_seconds missing", `{"lease_id":"`+f.activeLease+`"}`, "duration_seconds")
	add("renew", "duration_seconds 0", `{"lease_id":"`+f.activeLease+`","duration_seconds":0}`, "duration_seconds")
	add("renew", "duration_seconds 86401", `{"lease_id":"`+f.activeLease+`","duration_seconds":86401}`, "duration_seconds")
	add("renew", "duration_seconds null", `{"lease_id":"`+f.activeLease+`","duration_seconds":null}`, "duration_seconds")
	add("renew", "lease_id missing", `{"duration_seconds":10}`, "lease_id")
	add("leases.get", "lease_id missing", `{}`, "lease_id")
	add("leases.get", "lease_id wrong type", `{"lease_id":{"id":1}}`, "lease_id")

	// cleanup, lists: no arguments.
	add("cleanup", "argument", `{"pool_name":"bi"}`, `"pool_name"`)
	add("admin.pools.list", "argument", `{"name":"bi"}`, `"name"`)
	add("admin.consumers.list", "argument", `{"limit":10}`, `"limit"`)

	// stats
	add("stats", "pool_name missing", `{}`, "pool_name")
	add("stats", "pool_name wrong type", `{"pool_name":true}`, "pool_name")
	add("stats", "pool_name pattern", `{"pool_name":"bi/../x"}`, "pool_name")
	add("stats", "misspelt pool", `{"pool":"bi"}`, `"pool"`)

	// pools
	add("admin.pools.create", "name missing", `{"description":"x"}`, "name")
	add("admin.pools.create", "name pattern", `{"name":"a b"}`, "name")
	add("admin.pools.create", "name too long", `{"name":"`+strings.Repeat("n", 129)+`"}`, "name")
	add("admin.pools.create", "description wrong type", `{"name":"bi3","description":5}`, "description")
	add("admin.pools.update", "name missing", `{"description":"x"}`, "name")
	add("admin.pools.update", "health_check wrong type", `{"name":"bi","health_check":"yes"}`)
	add("admin.pools.update", "interval_seconds 0", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":0,"failure_threshold":1}}`, "interval_seconds")
	add("admin.pools.update", "failure_threshold 0", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":0}}`, "failure_threshold")
	add("admin.pools.update", "attempts 6", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","attempts":6}}}`, "attempts")
	add("admin.pools.update", "timeout 0", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","timeout":0}}}`, "timeout")
	add("admin.pools.update", "status code 99", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","expected_status_codes":[99]}}}`, "expected_status_codes")
	add("admin.pools.update", "unknown health_check field", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"every":3}}`, `"every"`)
	add("admin.pools.delete", "FORCE besides force", `{"name":"bi","force":false,"FORCE":true}`, `"FORCE"`)
	cases = append(cases, badCase{op: "admin.pools.delete", name: "force twice", body: []byte(`{"name":"bi","force":false,"force":true}`),
		status: 400, code: "bad_request", schemaBlind: true, contains: `duplicate field "force"`})
	add("acquire", "nested name in another case", `{"pool_name":"bi","filters":{"Country":"AR"}}`, `"Country"`)
	cases = append(cases, badCase{op: "acquire", name: "nested duplicate", body: []byte(`{"pool_name":"bi","filters":{"country":"AR","country":"BR"}}`),
		status: 400, code: "bad_request", schemaBlind: true, contains: `duplicate field "country" in filters`})
	cases = append(cases, badCase{op: "admin.proxies.update", name: "credentials user twice", body: []byte(`{"proxy_id":"` + f.proxyID + `","credentials":{"user":"a","password":"p","user":"b"}}`),
		status: 400, code: "bad_request", schemaBlind: true, contains: `duplicate field "user" in credentials`})
	add("admin.proxies.update", "credentials name in another case", `{"proxy_id":"`+f.proxyID+`","credentials":{"user":"a","Password":"p"}}`, `"Password"`)
	add("admin.pools.update", "health check option in another case", `{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","Timeout":2}}}`, `"Timeout"`)
	cases = append(cases, badCase{op: "admin.pools.update", name: "health check header twice", body: []byte(`{"name":"bi","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","headers":{"X-A":"1","X-A":"2"}}}}`),
		status: 400, code: "bad_request", schemaBlind: true, contains: `duplicate field "X-A"`})
	add("admin.pools.delete", "force wrong type", `{"name":"bi","force":"yes"}`, "force")
	add("admin.pools.delete", "name missing", `{"force":true}`, "name")

	// proxies.add
	proxy := func(fields string) string {
		return `{"pool_name":"bi","proxies":[{"host":"h","port":1` + fields + `}]}`
	}
	add("admin.proxies.add", "port 0", `{"pool_name":"bi","proxies":[{"host":"h","port":0}]}`, "port")
	add("admin.proxies.add", "port 65536", `{"pool_name":"bi","proxies":[{"host":"h","port":65536}]}`, "port")
	add("admin.proxies.add", "port missing", `{"pool_name":"bi","proxies":[{"host":"h"}]}`, "port")
	add("admin.proxies.add", "port string", `{"pool_name":"bi","proxies":[{"host":"h","port":"80"}]}`, "port")
	add("admin.proxies.add", "host empty", `{"pool_name":"bi","proxies":[{"host":"","port":1}]}`, "host")
	for _, bad := range []string{"bad host", "a_b.example", "-a.example", "a..example", "http://a.example", "a.example:80", "[2001:db8::1]", "fe80::1%eth0", "256.1.1.1", "1.2.3", strings.Repeat("h", 64) + ".example"} {
		cases = append(cases, badCase{op: "admin.proxies.add", name: "host " + bad, body: []byte(`{"pool_name":"bi","proxies":[{"host":"h","port":1},{"host":"` + bad + `","port":2}]}`),
			status: 400, code: "bad_request", contains: `proxies[1].host`})
		cases = append(cases, badCase{op: "admin.proxies.update", name: "host " + bad, body: []byte(`{"proxy_id":"` + f.proxyID + `","host":"` + bad + `"}`),
			status: 400, code: "bad_request", contains: `host must be a host name`})
	}
	add("admin.proxies.add", "latitude 91", proxy(`,"latitude":91,"longitude":0`), "latitude")
	add("admin.proxies.add", "longitude -181", proxy(`,"latitude":0,"longitude":-181`), "longitude")
	add("admin.proxies.add", "max_concurrency 0", proxy(`,"max_concurrency":0`), "max_concurrency")
	add("admin.proxies.add", "max_concurrency fraction", proxy(`,"max_concurrency":1.5`), "max_concurrency")
	add("admin.proxies.add", "protocol enum", proxy(`,"protocol":"ftp"`), "protocol")
	add("admin.proxies.add", "status enum", proxy(`,"status":"dead"`), "status")
	add("admin.proxies.add", "asn wrong type", proxy(`,"asn":"AS1"`), "asn")
	add("admin.proxies.add", "nested unknown field", proxy(`,"contry":"AR"`), `"contry"`)
	add("admin.proxies.add", "credentials unknown field", proxy(`,"credentials":{"user":"u","password":"p","token":"t"}`), `"token"`)
	add("admin.proxies.add", "no proxies", `{"pool_name":"bi","proxies":[]}`, "proxies")
	add("admin.proxies.add", "proxies missing", `{"pool_name":"bi"}`, "proxies")
	add("admin.proxies.add", "proxies wrong type", `{"pool_name":"bi","proxies":{"host":"h","port":1}}`, "proxies")
	many := make([]string, model.MaxProxiesPerAdd+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"host":"h%d","port":%d}`, i, i+1)
	}
	add("admin.proxies.add", "1001 proxies", `{"pool_name":"bi","proxies":[`+strings.Join(many, ",")+`]}`, "1001")
	// The bad proxy is the last one: nothing of the first ones is added.
	add("admin.proxies.add", "last proxy bad", `{"pool_name":"bi","proxies":[`+strings.Join(many[:5], ",")+`,{"host":"h","port":70000}]}`, "proxies[5]")

	// proxies.list
	add("admin.proxies.list", "limit 0", `{"pool_name":"bi","limit":0}`, "limit")
	add("admin.proxies.list", "limit 1001", `{"pool_name":"bi","limit":1001}`, "limit")
	add("admin.proxies.list", "limit negative", `{"pool_name":"bi","limit":-1}`, "limit")
	add("admin.proxies.list", "limit string", `{"pool_name":"bi","limit":"10"}`, "limit")
	add("admin.proxies.list", "status enum", `{"pool_name":"bi","status":"dead"}`, "status")
	add("admin.proxies.list", "cursor wrong type", `{"pool_name":"bi","cursor":3}`, "cursor")
	add("admin.proxies.list", "pool_name missing", `{"limit":5}`, "pool_name")

	// proxies.get, delete
	add("admin.proxies.get", "proxy_id missing", `{}`, "proxy_id")
	add("admin.proxies.get", "proxy_id wrong type", `{"proxy_id":5}`, "proxy_id")
	add("admin.proxies.delete", "force wrong type", `{"proxy_id":"`+f.proxyID+`","force":1}`, "force")
	add("admin.proxies.delete", "proxy_id missing", `{"force":true}`, "proxy_id")

	// proxies.update
	upd := func(fields string) string { return `{"proxy_id":"` + f.proxyID + `",` + fields + `}` }
	add("admin.proxies.update", "port 0", upd(`"port":0`), "port")
	add("admin.proxies.update", "port 65536", upd(`"port":65536`), "port")
	add("admin.proxies.update", "port null", upd(`"port":null`), "port")
	add("admin.proxies.update", "host empty", upd(`"host":""`), "host")
	add("admin.proxies.update", "host null", upd(`"host":null`), "host")
	add("admin.proxies.update", "status null", upd(`"status":null`), "status")
	add("admin.proxies.update", "status enum", upd(`"status":"dead"`), "status")
	add("admin.proxies.update", "protocol enum", upd(`"protocol":"ftp"`), "protocol")
	add("admin.proxies.update", "latitude 91", upd(`"latitude":91`), "latitude")
	add("admin.proxies.update", "longitude 180.5", upd(`"longitude":180.5`), "longitude")
	add("admin.proxies.update", "max_concurrency 0", upd(`"max_concurrency":0`), "max_concurrency")
	add("admin.proxies.update", "max_concurrency negative", upd(`"max_concurrency":-3`), "max_concurrency")
	add("admin.proxies.update", "asn wrong type", upd(`"asn":"x"`), "asn")
	add("admin.proxies.update", "credentials wrong type", upd(`"credentials":"u:p"`), "credentials")
	add("admin.proxies.update", "proxy_id missing", `{"city":"x"}`, "proxy_id")
	add("admin.proxies.update", "good field then bad one", upd(`"city":"Lima","port":0`), "port")

	// consumers.ensure
	add("admin.consumers.ensure", "name missing", `{}`, "name")
	add("admin.consumers.ensure", "name empty", `{"name":""}`, "name")
	add("admin.consumers.ensure", "name pattern", `{"name":"a:b"}`, "name")
	add("admin.consumers.ensure", "name wrong type", `{"name":["a"]}`, "name")

	// health.apply
	ha := func(fields string) string {
		return `{"proxy_id":"` + f.proxyID + `","status":"banned","latency_ms":1,"protocol":"http"` + fields + `}`
	}
	add("admin.health.apply", "status enum", `{"proxy_id":"`+f.proxyID+`","status":"dead","latency_ms":1,"protocol":"http"}`, "status")
	add("admin.health.apply", "status missing", `{"proxy_id":"`+f.proxyID+`","latency_ms":1,"protocol":"http"}`, "status")
	add("admin.health.apply", "protocol missing", `{"proxy_id":"`+f.proxyID+`","status":"banned","latency_ms":1}`, "protocol")
	add("admin.health.apply", "latency negative", ha(`,"latency_ms":-1`), "latency_ms")
	add("admin.health.apply", "attempts 0", ha(`,"attempts":0`), "attempts")
	add("admin.health.apply", "attempts 6", ha(`,"attempts":6`), "attempts")
	add("admin.health.apply", "checked_at not a time", ha(`,"checked_at":"yesterday"`), "checked_at")
	add("admin.health.apply", "checked_at wrong type", ha(`,"checked_at":1700000000`), "checked_at")
	add("admin.health.apply", "status_code wrong type", ha(`,"status_code":"200"`), "status_code")
	add("admin.health.apply", "proxy_id missing", `{"status":"banned","latency_ms":1,"protocol":"http"}`, "proxy_id")

	return append(cases, v11BadCases(f)...)
}

// v11BadCases are the refused forms of the contract's v1.1 fields.
func v11BadCases(f badInputFixture) []badCase {
	var cases []badCase
	add := func(op, name, body string, contains ...string) {
		c := badCase{op: op, name: "v1.1 " + name, body: []byte(body), status: 400, code: "bad_request"}
		if len(contains) > 0 {
			c.contains = contains[0]
		}
		cases = append(cases, c)
	}
	rel := func(fields string) string { return `{"lease_id":"` + f.activeLease + `",` + fields + `}` }
	add("release", "outcome wrong type", rel(`"outcome":1`), "outcome")
	add("release", "outcome unknown", rel(`"outcome":"timeout"`), "outcome")
	add("release", "reason without outcome", rel(`"reason":"blocked"`), "reason")
	add("release", "reason with null outcome", rel(`"outcome":null,"reason":"blocked"`), "reason")
	add("release", "reason over 1024 code points", rel(`"outcome":"failure","reason":"`+strings.Repeat("é", 1025)+`"`), "1024")
	add("release", "reason wrong type", rel(`"outcome":"failure","reason":["x"]`), "reason")

	acq := func(fields string) string { return `{"pool_name":"bi",` + fields + `}` }
	add("acquire", "selector lowest_latency case", acq(`"selector":"Lowest_Latency"`), "selector")
	add("acquire", "exclude_proxy_ids wrong type", acq(`"exclude_proxy_ids":"`+f.proxyID+`"`), "exclude_proxy_ids")
	add("acquire", "exclude_proxy_ids item not a UUID", acq(`"exclude_proxy_ids":["`+f.proxyID+`","p1"]`), "exclude_proxy_ids[1]")
	add("acquire", "exclude_proxy_ids item wrong type", acq(`"exclude_proxy_ids":[7]`), "exclude_proxy_ids")
	ids := make([]string, model.MaxExcludeProxyIDs+1)
	for i := range ids {
		ids[i] = `"` + uuid.NewString() + `"`
	}
	add("acquire", "exclude_proxy_ids 101", acq(`"exclude_proxy_ids":[`+strings.Join(ids, ",")+`]`), "101")
	add("acquire", "protocol unknown", acq(`"filters":{"protocol":"ftp"}`), "protocol")
	add("acquire", "protocol unknown in a list", acq(`"filters":{"protocol":["http","ftp"]}`), "protocol")
	add("acquire", "protocol empty list", acq(`"filters":{"protocol":[]}`), "protocol")
	add("acquire", "protocol wrong type", acq(`"filters":{"protocol":5}`), "protocol")
	add("acquire", "nested protocol unknown", acq(`"filters":{"any_of":[{"protocol":"gopher"}]}`), "protocol")
	add("acquire", "nested protocol empty list", acq(`"filters":{"none_of":[{"all_of":[{"protocol":[]}]}]}`), "protocol")

	add("admin.pools.create", "cooldown seconds > max_seconds", `{"name":"bi4","cooldown":{"failures":3,"seconds":10,"max_seconds":5}}`, "max_seconds")
	cases[len(cases)-1].schemaBlind = true // a schema cannot compare two fields
	add("admin.pools.create", "cooldown failures 0", `{"name":"bi4","cooldown":{"failures":0,"seconds":1,"max_seconds":5}}`, "failures")
	add("admin.pools.create", "cooldown missing max_seconds", `{"name":"bi4","cooldown":{"failures":1,"seconds":1}}`, "max_seconds")
	add("admin.pools.create", "cooldown unknown field", `{"name":"bi4","cooldown":{"failures":1,"seconds":1,"max_seconds":1,"jitter":1}}`, `"jitter"`)
	add("admin.pools.create", "cooldown wrong type", `{"name":"bi4","cooldown":60}`, "cooldown")
	add("admin.pools.update", "cooldown seconds > max_seconds", `{"name":"bi","cooldown":{"failures":1,"seconds":60,"max_seconds":30}}`, "max_seconds")
	cases[len(cases)-1].schemaBlind = true
	add("admin.pools.update", "cooldown seconds 0", `{"name":"bi","cooldown":{"failures":1,"seconds":0,"max_seconds":30}}`, "seconds")
	add("admin.pools.update", "cooldown fraction", `{"name":"bi","cooldown":{"failures":1,"seconds":1.5,"max_seconds":30}}`)
	add("admin.pools.update", "cooldown wrong type", `{"name":"bi","cooldown":"1m"}`)

	upd := func(fields string) string { return `{"proxy_id":"` + f.proxyID + `",` + fields + `}` }
	add("admin.proxies.update", "consecutive_failures negative", upd(`"consecutive_failures":-1`), "consecutive_failures")
	add("admin.proxies.update", "consecutive_failures null", upd(`"consecutive_failures":null`), "consecutive_failures")
	add("admin.proxies.update", "consecutive_failures wrong type", upd(`"consecutive_failures":"3"`))
	add("admin.proxies.update", "cooldown_until not a time", upd(`"cooldown_until":"soon"`), "cooldown_until")
	add("admin.proxies.update", "cooldown_until wrong type", upd(`"cooldown_until":1700000000`))
	add("admin.proxies.update", "blank user", upd(`"credentials":{"user":"","password":"p"}`), "credentials.user")
	add("admin.proxies.update", "blank password", upd(`"credentials":{"user":"u","password":""}`), "credentials.password")
	add("admin.proxies.add", "blank user", `{"pool_name":"bi","proxies":[{"host":"h","port":1,"credentials":{"user":"","password":"p"}}]}`, "proxies[0].credentials.user")
	add("admin.proxies.add", "blank password", `{"pool_name":"bi","proxies":[{"host":"h","port":1},{"host":"h","port":2,"credentials":{"user":"u","password":""}}]}`, "proxies[1].credentials.password")

	add("admin.health.last", "proxy_id missing", `{}`, "proxy_id")
	add("admin.health.last", "proxy_id wrong type", `{"proxy_id":5}`, "proxy_id")
	return cases
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("bi")
	ps := e.addProxies("bi",
		map[string]any{"host": "a", "port": 1, "max_concurrency": 2, "country": "AR"},
		map[string]any{"host": "b", "port": 2})
	active, _ := e.mustAcquire(map[string]any{"pool_name": "bi", "consumer_name": "owner"})
	released, _ := e.mustAcquire(map[string]any{"pool_name": "bi", "consumer_name": "owner"})
	e.release(released.ID)
	f := badInputFixture{proxyID: ps[0].ID, otherProxyID: ps[1].ID, activeLease: active.ID, releasedLease: released.ID}

	// Every base body is a good request: the schema accepts it.
	for op, good := range validBodies(f) {
		e.requireValidRequest(op, []byte(good))
	}

	pools := []string{"bi"}
	leases := []string{active.ID, released.ID}
	before := e.snapshot(pools, leases)
	proxyBefore := e.getProxy(ps[0].ID)

	cases := badCases(f)
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.op] = true
		t.Run(c.op+"/"+c.name, func(t *testing.T) {
			msg := e.raw(c.op, c.body)
			det := requireErrorReply(t, e.sch, msg, c.status, c.code)
			if c.contains != "" {
				require.Contains(t, det.Message, c.contains)
			}
			if !c.schemaBlind {
				e.requireInvalidRequest(c.op, c.body)
			}
		})
	}
	for _, op := range servedOps {
		require.True(t, covered[op], "no bad input for %s", op)
	}

	require.Equal(t, before, e.snapshot(pools, leases), "refused requests changed nothing")
	require.Equal(t, proxyBefore, e.getProxy(ps[0].ID))
	require.Len(t, e.events(model.EventAcquireFailed), 0)
	require.Len(t, e.events(model.EventAcquired), 2)
	require.Len(t, e.events(model.EventRenewed), 0)
	require.Len(t, e.events(model.EventHealth), 0)
	var cons model.ConsumersReply
	e.okInto("admin.consumers.list", "{}", &cons)
	require.Len(t, cons.Consumers, 1, "no consumer registered by a refused acquire")
	require.Equal(t, "owner", cons.Consumers[0].Name)
}

// TestBodyLimits: exactly at the limit is accepted, one byte over is 413.
func TestBodyLimits(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("lim")

	pad := func(b string, n int) []byte { return []byte(b + strings.Repeat(" ", n-len(b))) }
	atLimit := pad(`{"pool_name":"lim"}`, broker.MaxBody)
	require.Len(t, atLimit, broker.MaxBody)
	var st model.PoolStatsSnapshot
	e.okInto("stats", atLimit, &st)
	require.Equal(t, "lim", st.PoolName)
	e.fail("stats", pad(`{"pool_name":"lim"}`, broker.MaxBody+1), 413, "payload_too_large")
	// Leading whitespace counts too.
	e.fail("stats", []byte(strings.Repeat("\n", broker.MaxBody)+`{"pool_name":"lim"}`), 413, "payload_too_large")
	// An acquire at its limit with real content.
	acq := `{"pool_name":"lim","request_id":"r","filters":{"any_of":[` + strings.TrimSuffix(strings.Repeat(`{"city":"`+strings.Repeat("c", 900)+`"},`, 60), ",") + `]}}`
	require.Less(t, len(acq), broker.MaxBody)
	rep := e.ok("acquire", pad(acq, broker.MaxBody))
	require.JSONEq(t, `{"lease":null,"proxy":null}`, string(rep))

	// proxies.add: 1000 proxies filling exactly 1 MiB are accepted; above a
	// 64 KiB body is fine here; one byte over 1 MiB is refused.
	proxies := make([]string, model.MaxProxiesPerAdd)
	for i := range proxies {
		proxies[i] = fmt.Sprintf(`{"host":"10.%d.%d.1","port":%d,"source":"%s"}`, i/256, i%256, 1000+i, strings.Repeat("s", 1000))
	}
	add := `{"pool_name":"lim","proxies":[` + strings.Join(proxies, ",") + `]}`
	require.Greater(t, len(add), broker.MaxBody)
	require.LessOrEqual(t, len(add), broker.MaxProxiesBody)
	e.fail("admin.proxies.add", pad(add, broker.MaxProxiesBody+1), 413, "payload_too_large")
	require.Zero(t, e.stats("lim").TotalProxies)
	var added model.ProxiesReply
	e.okInto("admin.proxies.add", pad(add, broker.MaxProxiesBody), &added)
	require.Len(t, added.Proxies, model.MaxProxiesPerAdd)
	require.Equal(t, model.MaxProxiesPerAdd, e.stats("lim").TotalProxies)
	// Past the stats limit, but a proxies.add: accepted.
	small := pad(`{"pool_name":"lim","proxies":[{"host":"x","port":1}]}`, broker.MaxBody+100)
	e.okInto("admin.proxies.add", small, &added)
	require.Len(t, added.Proxies, 1)
}

// TestGoodRequests: a few full requests that both the schemas and the
// worker accept.
func TestGoodRequests(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.ok("admin.pools.create", `{"name":"good-pool_1","description":null}`)
	e.ok("admin.pools.update", `{"name":"good-pool_1","description":"d","health_check":{"enabled":false,"interval_seconds":0.5,"failure_threshold":2,"options":{"target_url":"https://example.com","timeout":2.5,"attempts":5,"expected_status_codes":[200,204],"slow_threshold_ms":0,"allow_redirects":false,"headers":{"X-A":"b"}}}}`)
	e.ok("admin.pools.update", `{"name":"good-pool_1","health_check":{"enabled":true,"interval_seconds":60,"failure_threshold":1,"options":null}}`)
	var rep model.ProxiesReply
	e.okInto("admin.proxies.add", `{"pool_name":"good-pool_1","proxies":[
		{"host":"2001:db8::1","port":65535,"protocol":"socks4","status":"slow","credentials":{"user":"ü ser","password":"p@ss"},"source":"s","country":"AR","city":"BA","latitude":-90,"longitude":180,"isp":"i","asn":0,"max_concurrency":1},
		{"host":"h","port":1,"protocol":null,"status":null,"credentials":null,"source":null,"country":null,"city":null,"latitude":null,"longitude":null,"isp":null,"asn":null,"max_concurrency":null}]}`, &rep)
	require.Equal(t, "socks4://%C3%BC%20ser:p%40ss@[2001:db8::1]:65535", rep.Proxies[0].URL)
	id := rep.Proxies[1].ID
	e.ok("admin.proxies.update", `{"proxy_id":"`+id+`","host":"h2","port":2,"protocol":"https","status":"active","credentials":{"user":"u","password":"p"},"source":null,"latitude":90,"longitude":-180,"max_concurrency":null}`)
	e.ok("admin.proxies.list", `{"pool_name":"good-pool_1","status":null,"limit":1000,"cursor":null}`)
	e.ok("acquire", `{"pool_name":"good-pool_1","consumer_name":"c-1","duration_seconds":86400,"selector":"random","wait_seconds":0,"request_id":"`+strings.Repeat("r", 128)+`",
		"filters":{"source":null,"country":null,"city":null,"isp":null,"asn":null,"latitude":90,"longitude":-180,"radius_km":0.001,"all_of":[],"any_of":null,"none_of":[{"country":"XX"}]}}`)
	e.ok("acquire", `{"pool_name":"good-pool_1","consumer_name":null,"duration_seconds":null,"filters":null,"selector":null,"wait_seconds":null,"request_id":null}`)
	e.ok("admin.health.apply", `{"proxy_id":"`+id+`","status":"inactive","latency_ms":0,"protocol":"https","attempts":null,"status_code":null,"checked_at":null,"error_message":null}`)
	e.ok("admin.health.apply", `{"proxy_id":"`+id+`","status":"active","latency_ms":3.5,"protocol":"https","attempts":5,"status_code":200,"checked_at":"2025-06-01T12:00:00.123456789-03:00","error_message":""}`)
	e.ok("admin.consumers.ensure", `{"name":"`+strings.Repeat("C", 128)+`"}`)
	e.ok("stats", `  {"pool_name":"good-pool_1"}  `)
	e.ok("admin.proxies.delete", `{"proxy_id":"`+rep.Proxies[0].ID+`","force":null}`)
	e.ok("admin.pools.delete", `{"name":"good-pool_1","force":true}`)

	// Ids that name nothing are well-formed: 404, not 400.
	e.failWellFormed("admin.proxies.get", `{"proxy_id":"`+uuid.NewString()+`"}`, 404, "proxy_not_found")
	// An empty body is {} (not JSON, so outside what the schema judges).
	msg := e.raw("cleanup", nil)
	require.Empty(t, msg.Header.Get("Nats-Service-Error-Code"))
	require.NoError(t, e.sch.Validate("cleanup.reply", msg.Data))
	var b map[string]any
	require.NoError(t, json.Unmarshal(msg.Data, &b))
}
