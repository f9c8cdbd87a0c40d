package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestReleaseAndRunReportOutcomes: release --outcome, and run's exit status
// as the outcome, drive the pool's cooldown.
func TestReleaseAndRunReportOutcomes(t *testing.T) {
	t.Parallel()
	_, printenv := binaries(t)
	h := newHarness(t)
	out := h.ok("pools", "create", "fbk", "--cooldown-failures", "2", "--cooldown-seconds", "600")
	require.Regexp(t, `(?m)^fbk\s+[0-9a-f-]{36}\s+-\s+2 failures: 10m0s\s+-$`, out)
	px := okJSON[model.ProxiesReply](h, "proxies", "add", "--pool", "fbk", "socks5://bot:s3cret@127.0.0.1:1080").Proxies[0]
	failures := func() int {
		p, err := h.c.GetProxy(h.ctx(), px.ID)
		require.NoError(t, err)
		return p.ConsecutiveFailures
	}

	l := okJSON[model.AcquireReply](h, "acquire", "--pool", "fbk", "--protocol", "socks5,https").Lease
	for _, args := range [][]string{
		{"release", l.ID, "--reason", "no outcome"},
		{"release", l.ID, "--outcome", "meh"},
		{"release", l.ID, "--outcome", "failure", "--reason", strings.Repeat("x", 1025)},
	} {
		r := h.run(args...)
		require.Equal(t, exitUsage, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
	}
	out = h.ok("release", l.ID, "--outcome", "failure", "--reason", "HTTP 403 from target")
	require.Regexp(t, `(?m)^status\s+released$`, out)
	require.Equal(t, 1, failures())

	// run: a failing command reports a failure, which cools the proxy down.
	r := h.run("run", "--pool", "fbk", "--", printenv, "-exit", "4")
	require.Equal(t, 4, r.code, r)
	require.Empty(t, r.stderr, "the status is passed on, not reported as an error")
	require.Equal(t, 2, failures())
	out = h.ok("proxies", "get", px.ID)
	require.Regexp(t, `(?m)^consecutive_failures\s+2$`, out)
	require.Regexp(t, `(?m)^cooldown_until\s+\S+Z$`, out)
	require.Regexp(t, `(?m)^cooling_proxies\s+1$`, h.ok("stats", "--pool", "fbk"))
	r = h.run("run", "--pool", "fbk", "--", printenv)
	require.Equal(t, exitNoProxy, r.code, "cooling: nothing to run with\n%s", r)

	// Back in rotation by hand, then a success resets the count.
	h.ok("proxies", "update", px.ID, "--consecutive-failures", "1", "--clear", "cooldown_until")
	r = h.run("run", "--pool", "fbk", "--no-outcome", "--", printenv, "-exit", "5")
	require.Equal(t, 5, r.code, r)
	require.Equal(t, 1, failures(), "--no-outcome reports nothing")
	r = h.run("run", "--pool", "fbk", "--", printenv, "-exit", "0")
	require.Equal(t, 0, r.code, r)
	require.Zero(t, failures(), "status 0 reports a success")
	r = h.run("run", "--pool", "fbk", "--", "/nonexistent/command")
	require.Equal(t, 127, r.code, r)
	require.Zero(t, failures(), "a command that never ran says nothing of the proxy")

	// The events say it too.
	out = h.ok("events", "--since", "1h", "--event", "released,cooldown", "--count", "6")
	require.Contains(t, out, "outcome=failure")
	require.Contains(t, out, "outcome=success")
	require.Regexp(t, `(?m)^\S+\s+cooldown\s+pool=fbk\s+proxy=`+px.ID+`\s+failures=2\s+until=\S+\s+reason="\S+ exited with status 4"$`, out)

	// --cooldown-until takes a time or a duration from now.
	p := okJSON[model.Proxy](h, "proxies", "update", px.ID, "--cooldown-until", "90s")
	require.NotNil(t, p.CooldownUntil)
	require.WithinDuration(t, time.Now().Add(90*time.Second), *p.CooldownUntil, 30*time.Second)
	r = h.run("acquire", "--pool", "fbk")
	require.Equal(t, exitNoProxy, r.code, r)
}

func TestPoolsUpdateCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("pools", "create", "pu")
	p := okJSON[model.ProxyPool](h, "pools", "update", "pu", "--description", "feedback", "--cooldown-failures", "3", "--cooldown-seconds", "30", "--cooldown-max", "600")
	require.Equal(t, &model.Cooldown{Failures: 3, Seconds: 30, MaxSeconds: 600}, p.Cooldown)
	require.Equal(t, "feedback", *p.Description)
	out := h.ok("pools", "update", "pu", "--cooldown-max", "900")
	require.Regexp(t, `(?m)^pu\s+[0-9a-f-]{36}\s+-\s+3 failures: 30s\.\.15m0s\s+feedback$`, out, "partial settings merge")

	p = okJSON[model.ProxyPool](h, "pools", "update", "pu", "--health-interval", "60", "--health-url", "https://example.com/", "--health-threshold", "2")
	require.Equal(t, 60.0, p.HealthCheck.IntervalSeconds)
	require.Equal(t, 2, p.HealthCheck.FailureThreshold)
	require.True(t, p.HealthCheck.Enabled)
	require.Equal(t, "https://example.com/", p.HealthCheck.Options.TargetURL)
	require.Equal(t, []int{200}, p.HealthCheck.Options.ExpectedStatusCodes)
	p = okJSON[model.ProxyPool](h, "pools", "update", "pu", "--health-attempts", "3", "--health-enabled=false")
	require.Equal(t, 3, p.HealthCheck.Options.Attempts)
	require.Equal(t, "https://example.com/", p.HealthCheck.Options.TargetURL, "kept")
	require.False(t, p.HealthCheck.Enabled)
	require.Equal(t, 900, p.Cooldown.MaxSeconds, "kept")

	p = okJSON[model.ProxyPool](h, "pools", "update", "pu", "--clear", "cooldown,description")
	require.Nil(t, p.Cooldown)
	require.Nil(t, p.Description)
	require.NotNil(t, p.HealthCheck)
	p = okJSON[model.ProxyPool](h, "pools", "update", "pu", "--clear", "health_check")
	require.Nil(t, p.HealthCheck)

	for _, args := range [][]string{
		{"pools", "update", "pu", "--cooldown-max", "60"},                                // no cooldown to merge into
		{"pools", "update", "pu", "--cooldown-failures", "1", "--cooldown-seconds", "0"}, // seconds >= 1
		{"pools", "update", "pu", "--cooldown-failures", "1", "--cooldown-seconds", "60", "--cooldown-max", "30"},
		{"pools", "update", "pu", "--health-url", "https://example.com/"}, // no interval
		{"pools", "update", "pu", "--clear", "name"},
		{"pools", "update", "pu", "--clear", "cooldown", "--cooldown-failures", "1"},
		{"pools", "update"},
	} {
		r := h.run(args...)
		require.Equal(t, exitUsage, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
	}
	r := h.run("pools", "update", "nope", "--description", "x")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "pool_not_found")
}

func TestHealthCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ps := h.pool("hl", "http://127.0.0.1:3128", "http://127.0.0.1:3129")

	out := h.ok("health", "last", ps[0].ID)
	require.Equal(t, "proxy "+ps[0].ID+" has no health result yet\n", out)
	require.JSONEq(t, `{"result":null}`, h.ok("health", "last", ps[0].ID, "--json"))

	p := okJSON[model.Proxy](h, "health", "apply", ps[0].ID, "--status", "slow", "--latency", "2500", "--protocol", "http",
		"--status-code", "200", "--attempts", "2", "--checked-at", "2026-01-02T03:04:05Z")
	require.Equal(t, model.ProxySlow, p.Status)
	require.Equal(t, 2500.0, *p.LatencyMs)
	out = h.ok("health", "apply", ps[1].ID, "--status", "active", "--latency", "12.5", "--protocol", "http", "--error", "none")
	require.Regexp(t, `(?m)^latency\s+12\.5ms$`, out)
	out = h.ok("health", "last", ps[0].ID)
	require.Regexp(t, `(?m)^PROXY_ID\s+STATUS\s+LATENCY\s+CODE\s+ATTEMPTS\s+CHECKED_AT\s+ERROR$`, out)
	require.Regexp(t, `(?m)^`+ps[0].ID+`\s+slow\s+2\.5s\s+200\s+2\s+2026-01-02T03:04:05\.000Z\s+-$`, out)
	last := okJSON[model.HealthLastReply](h, "health", "last", ps[1].ID)
	require.Equal(t, "none", *last.Result.ErrorMessage)
	require.Equal(t, 1, last.Result.Attempts)

	// lowest_latency: the active proxy measured fastest.
	l := okJSON[model.AcquireReply](h, "acquire", "--pool", "hl", "--selector", "lowest_latency", "--exclude", ps[0].ID).Lease
	require.Equal(t, ps[1].ID, l.ProxyID)

	// The pool has no health_check options: the check is refused with 400,
	// which shows it reached a worker's health checker.
	r := h.run("health", "check", ps[0].ID)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "target_url is required")
	for _, args := range [][]string{
		{"health", "check"},
		{"health", "check", ps[0].ID, "--pool", "hl"},
		{"health", "apply", ps[0].ID, "--status", "active", "--latency", "1"},
		{"health", "apply", ps[0].ID, "--status", "up", "--latency", "1", "--protocol", "http"},
		{"health", "last"},
		{"proxies", "add", "--pool", "hl", "http://user@127.0.0.1:1"},
		{"proxies", "update", ps[0].ID, "--user", "u"},
		{"proxies", "update", ps[0].ID, "--consecutive-failures", "-1"},
		{"proxies", "update", ps[0].ID, "--cooldown-until", "soon"},
		{"acquire", "--pool", "hl", "--protocol", "ftp"},
	} {
		r := h.run(args...)
		require.Equal(t, exitUsage, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
	}
}
