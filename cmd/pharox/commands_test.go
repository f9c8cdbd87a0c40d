package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

func TestAcquireAndLeaseCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pool("scrapers", "http://127.0.0.1:3128", "socks5://bot:s3cret@127.0.0.1:1080")

	// Human output: the lease and the proxy URL.
	out := h.ok("acquire", "--pool", "scrapers", "--consumer", "crawler-1", "--duration", "60", "--country", "AR", "--selector", "first_available")
	require.Regexp(t, `(?m)^lease\s+[0-9a-f-]{36}$`, out)
	require.Regexp(t, `(?m)^proxy\s+http://127\.0\.0\.1:3128$`, out)
	require.Regexp(t, `(?m)^consumer\s+crawler-1$`, out)
	require.Regexp(t, `(?m)^expires\s+\S+Z \(in 1m0s\)$`, out)
	leaseID := regexp.MustCompile(`(?m)^lease\s+(\S+)`).FindStringSubmatch(out)[1]
	require.Equal(t, model.LeaseActive, h.lease(leaseID).Status)

	// JSON: the contract's reply; --wait, --request-id and the geo filters are sent.
	r := h.run("acquire", "--pool", "scrapers", "--wait", "0.2", "--request-id", "job-7",
		"--near", "-34.6,-58.4", "--radius", "50", "--source", "x", "--city", "y", "--isp", "z", "--asn", "7", "--json")
	require.Equal(t, exitNoProxy, r.code, "no proxy has those attributes\n%s", r)
	require.JSONEq(t, `{"lease":null,"proxy":null}`, r.stdout)
	reply := okJSON[model.AcquireReply](h, "acquire", "--pool", "scrapers", "-c", "crawler-2", "--selector", "least_used")
	require.NotNil(t, reply.Lease)
	require.Equal(t, "socks5://bot:s3cret@127.0.0.1:1080", reply.Proxy.URL)

	// --env for eval.
	h.ok("release", reply.Lease.ID)
	env := envLines(h.ok("acquire", "--pool", "scrapers", "--env"))
	require.Equal(t, "'socks5://bot:s3cret@127.0.0.1:1080'", env["PHAROX_PROXY_URL"])
	envLease := strings.Trim(env["PHAROX_LEASE_ID"], "'")
	require.Equal(t, model.LeaseActive, h.lease(envLease).Status)

	// lease, renew, stats, release, cleanup.
	out = h.ok("lease", leaseID)
	require.Regexp(t, `(?m)^status\s+active$`, out)
	before := h.lease(leaseID).ExpiresAt
	renewed := okJSON[model.LeaseReply](h, "renew", leaseID, "--duration", "600", "--consumer", "crawler-1")
	require.True(t, renewed.Lease.ExpiresAt.After(before))

	stats := okJSON[model.PoolStatsSnapshot](h, "stats", "--pool", "scrapers")
	require.Equal(t, 2, stats.TotalProxies)
	require.Equal(t, 2, stats.TotalLeases)
	out = h.ok("stats", "--pool", "scrapers")
	require.Regexp(t, `(?m)^available_proxies\s+0$`, out)

	out = h.ok("release", leaseID, "--consumer", "crawler-1")
	require.Regexp(t, `(?m)^status\s+released$`, out)
	require.Equal(t, model.LeaseReleased, h.lease(leaseID).Status)
	h.ok("release", leaseID) // twice: not an error

	require.Equal(t, "expired 0 lease(s)\n", h.ok("cleanup"))
	require.Equal(t, model.CleanupReply{Released: 0}, okJSON[model.CleanupReply](h, "cleanup"))
}

func TestAcquireNoProxyExitsThree(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pool("one", "http://127.0.0.1:3128")
	h.ok("acquire", "--pool", "one")

	r := h.run("acquire", "--pool", "one")
	require.Equal(t, exitNoProxy, r.code, r)
	require.Contains(t, r.stderr, `no proxy available in pool "one"`)
	require.Empty(t, r.stdout)

	r = h.run("acquire", "--pool", "one", "--json")
	require.Equal(t, exitNoProxy, r.code, r)
	require.JSONEq(t, `{"lease":null,"proxy":null}`, r.stdout)

	r = h.run("acquire", "--pool", "one", "--env")
	require.Equal(t, exitNoProxy, r.code, r)
	require.Empty(t, r.stdout, "nothing to eval")
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, args := range [][]string{
		{"acquire"},                         // --pool missing
		{"acquire", "--pool"},               // flag without value
		{"acquire", "--pool", "p", "extra"}, // stray argument
		{"acquire", "--pool", "p", "--duration", "soon"},
		{"acquire", "--pool", "p", "--radius", "5"},
		{"acquire", "--pool", "p", "--near", "north"},
		{"acquire", "--pool", "p", "--selector", "fastest"},
		{"acquire", "--pool", "p", "--wait", "61"},
		{"acquire", "--pool", "p", "--bogus"},
		{"acquirre", "--pool", "p"},
		{"pools", "frobnicate"},
		{"pools", "create"},
		{"release"},
		{"renew", "a", "b"},
		{"stats"},
		{"proxies", "add", "--pool", "p"},
		{"proxies", "add", "--pool", "p", "ftp://1.2.3.4:21"},
		{"proxies", "add", "--pool", "p", "1.2.3.4:0"},
		{"proxies", "update", "id", "--clear", "host"},
		{"proxies", "import", "--pool", "p"},
		{"proxies", "import", "--pool", "p", "--batch-size", "5000", "x.csv"},
		{"events", "--since", "yesterday"},
		{"events", "--event", "exploded"},
		{"run", "--pool", "p"},
		{"cleanup", "--timeout", "0s"},
	} {
		r := h.run(args...)
		require.Equal(t, exitUsage, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
		require.Contains(t, r.stderr, "--help' for usage", "pharox %s", strings.Join(args, " "))
	}
	r := h.runEnv(map[string]string{"PHAROX_TIMEOUT": "soon"}, "cleanup")
	require.Equal(t, exitUsage, r.code, r)
	require.Contains(t, r.stderr, "PHAROX_TIMEOUT")
}

func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.ok("--help")
	for _, cmd := range []string{"acquire", "release", "renew", "lease", "stats", "cleanup", "run", "pools", "proxies", "consumers", "health", "events"} {
		require.Regexp(t, `(?m)^\s+`+cmd+`\s`, out)
	}
	require.Contains(t, out, "Exit codes")
	require.Contains(t, h.ok("pools"), "create")
	require.Contains(t, h.ok("run", "--help"), "HTTPS_PROXY")
	require.Contains(t, h.ok(), "Usage:")
}

// TestErrorsExitOne: each contract error reaches the user with the
// worker's message and exit status 1.
func TestErrorsExitOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pool("errs", "http://127.0.0.1:3128")
	lease := okJSON[model.AcquireReply](h, "acquire", "--pool", "errs", "--consumer", "owner").Lease
	missing := uuid.NewString()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"acquire", "--pool", "latam"}, `pool_not_found: pool "latam" does not exist`},
		{[]string{"stats", "--pool", "bad name"}, "bad_request: pool_name must match"},
		{[]string{"lease", missing}, "lease_not_found: lease " + `"` + missing + `"`},
		{[]string{"proxies", "get", missing}, "proxy_not_found"},
		{[]string{"release", lease.ID, "--consumer", "thief"}, `forbidden: lease ` + lease.ID + ` is held by consumer "owner"`},
		{[]string{"pools", "create", "errs"}, `conflict: pool "errs" already exists`},
		{[]string{"pools", "delete", "errs"}, "conflict"},
		{[]string{"proxies", "list", "--pool", "errs", "--status", "dead"}, "bad_request"},
	} {
		r := h.run(tc.args...)
		require.Equal(t, exitError, r.code, "pharox %s\n%s", strings.Join(tc.args, " "), r)
		require.Contains(t, r.stderr, tc.want, "pharox %s", strings.Join(tc.args, " "))
	}
	h.ok("release", lease.ID)
	r := h.run("renew", lease.ID)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "lease_not_active")

	// No worker behind the prefix, and no server at all.
	r = h.run("stats", "--pool", "errs", "--subject-prefix", "nobody")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "no pharox worker answers nobody.stats")
	r = h.run("stats", "--pool", "errs", "--nats-url", "nats://user:hunter2@127.0.0.1:1", "--timeout", "500ms")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "no NATS server answers at nats://127.0.0.1:1") // the credentials are taken out of the URL
	require.NotContains(t, r.stderr, "hunter2")
}

func TestPoolsProxiesConsumers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	pool := okJSON[model.ProxyPool](h, "pools", "create", "adm", "--description", "for tests")
	require.Equal(t, "adm", pool.Name)
	out := h.ok("pools", "create", "adm2")
	require.Regexp(t, `(?m)^NAME\s+ID\s+HEALTH CHECK\s+COOLDOWN\s+DESCRIPTION$`, out)
	out = h.ok("pools", "list")
	require.Regexp(t, `(?m)^adm\s+[0-9a-f-]{36}\s+-\s+-\s+for tests$`, out)
	require.Regexp(t, `(?m)^adm2\s`, out)
	pools := okJSON[model.PoolsReply](h, "pools", "list")
	require.Len(t, pools.Pools, 2)

	out = h.ok("proxies", "add", "--pool", "adm", "127.0.0.1:3128", "https://u:p%40ss@[::1]:8443",
		"--country", "AR", "--city", "Buenos Aires", "--source", "vendor-a", "--max-concurrency", "2", "--asn", "7303",
		"--latitude", "-34.6", "--longitude", "-58.4", "--isp", "Telecom", "--status", "active")
	require.Regexp(t, `(?m)^ID\s+PROTOCOL\s+HOST\s+PORT\s+STATUS\s+COUNTRY\s+CITY\s+SOURCE\s+LEASES$`, out)
	require.Regexp(t, `(?m)\s+http\s+127\.0\.0\.1\s+3128\s+active\s+AR\s+Buenos Aires\s+vendor-a\s+0/2$`, out)
	list := okJSON[model.ProxiesReply](h, "proxies", "list", "--pool", "adm")
	require.Len(t, list.Proxies, 2)
	p6 := list.Proxies[1]
	require.Equal(t, "https://u:p%40ss@[::1]:8443", p6.URL)
	require.Equal(t, int64(7303), *p6.ASN)

	out = h.ok("proxies", "get", p6.ID)
	require.Regexp(t, `(?m)^url\s+https://u:xxxxx@\[::1\]:8443$`, out, "the password is masked")
	require.NotContains(t, out, "p%40ss")
	require.Regexp(t, `(?m)^max_concurrency\s+2$`, out)
	require.Equal(t, p6.URL, okJSON[model.Proxy](h, "proxies", "get", p6.ID).URL)

	up := okJSON[model.Proxy](h, "proxies", "update", p6.ID, "--status", "banned", "--port", "9443", "--clear", "city,max_concurrency", "--country", "BR")
	require.Equal(t, model.ProxyBanned, up.Status)
	require.Equal(t, 9443, up.Port)
	require.Nil(t, up.City)
	require.Nil(t, up.MaxConcurrency)
	require.Equal(t, "BR", *up.Country)
	up = okJSON[model.Proxy](h, "proxies", "update", p6.ID, "--clear", "credentials", "--host", "::2", "--protocol", "socks5")
	require.Equal(t, "socks5://[::2]:9443", up.URL)
	up = okJSON[model.Proxy](h, "proxies", "update", p6.ID, "--user", "a", "--password", "b")
	require.Equal(t, "socks5://a:b@[::2]:9443", up.URL)

	out = h.ok("proxies", "list", "--pool", "adm", "--status", "banned")
	require.Equal(t, 2, strings.Count(out, "\n"), out)
	out = h.ok("proxies", "list", "--pool", "adm", "--limit", "1")
	require.Equal(t, 2, strings.Count(out, "\n"), out)

	// A leased proxy is only deleted with --force.
	lease := okJSON[model.AcquireReply](h, "acquire", "--pool", "adm")
	require.Equal(t, list.Proxies[0].ID, lease.Proxy.ID)
	r := h.run("proxies", "delete", lease.Proxy.ID)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "conflict")
	require.Equal(t, "deleted proxy "+lease.Proxy.ID+"\n", h.ok("proxies", "delete", lease.Proxy.ID, "--force"))
	require.Equal(t, model.LeaseReleased, h.lease(lease.Lease.ID).Status)
	require.Equal(t, model.DeletedReply{Deleted: true}, okJSON[model.DeletedReply](h, "proxies", "delete", p6.ID))

	cons := okJSON[model.Consumer](h, "consumers", "ensure", "bot-1")
	out = h.ok("consumers", "ensure", "bot-1")
	require.Regexp(t, `(?m)^bot-1\s+`+cons.ID+`$`, out)
	out = h.ok("consumers", "list")
	require.Regexp(t, `(?m)^NAME\s+ID$`, out)
	require.Regexp(t, `(?m)^bot-1\s`, out)
	require.Regexp(t, `(?m)^default\s`, out)
	require.NotEmpty(t, okJSON[model.ConsumersReply](h, "consumers", "list").Consumers)

	require.Equal(t, "deleted pool adm\n", h.ok("pools", "delete", "adm"))
	require.Equal(t, model.DeletedReply{Deleted: true}, okJSON[model.DeletedReply](h, "pools", "delete", "adm2", "--force"))
	require.Empty(t, okJSON[model.PoolsReply](h, "pools", "list").Pools)
	require.JSONEq(t, `{"pools":[]}`, h.ok("pools", "list", "--json"))
}

// TestGlobalFlagsAndEnvironment: PHAROX_* variables set the defaults and a
// flag wins over them.
func TestGlobalFlagsAndEnvironment(t *testing.T) {
	t.Parallel()
	h := newHarnessWith(t, workertest.Config{Prefix: "px"})
	h.ok("pools", "create", "moved")

	// The default prefix finds no worker; the flag fixes it.
	r := h.runEnv(map[string]string{"PHAROX_SUBJECT_PREFIX": ""}, "pools", "list")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "pharox.admin.pools.list")
	r = h.runEnv(map[string]string{"PHAROX_SUBJECT_PREFIX": ""}, "pools", "list", "--subject-prefix", "px")
	require.Equal(t, 0, r.code, r)
	r = h.runEnv(map[string]string{"PHAROX_SUBJECT_PREFIX": "nope"}, "pools", "list", "--subject-prefix", "px")
	require.Equal(t, 0, r.code, r)

	// The URL: env, and the flag over it.
	r = h.runEnv(map[string]string{"PHAROX_NATS_URL": "nats://127.0.0.1:1"}, "pools", "list", "--timeout", "300ms")
	require.Equal(t, exitError, r.code, r)
	r = h.runEnv(map[string]string{"PHAROX_NATS_URL": "nats://127.0.0.1:1"}, "pools", "list", "--nats-url", h.url)
	require.Equal(t, 0, r.code, r)

	// A credentials file that does not exist is an error naming it.
	r = h.runEnv(map[string]string{"PHAROX_NATS_CREDS": "/nonexistent/user.creds"}, "pools", "list")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "user.creds")

	var pools model.PoolsReply
	require.NoError(t, json.Unmarshal([]byte(h.ok("pools", "list", "--json")), &pools))
	require.Equal(t, "moved", pools.Pools[0].Name)
}
