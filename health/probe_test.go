package health_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

func opts(target string, mut ...func(*model.HealthCheckOptions)) model.HealthCheckOptions {
	o := health.DefaultOptions()
	o.TargetURL = target
	o.Timeout = 10 // a probe that should answer gets time even on a loaded machine; the time-out cases set their own
	for _, m := range mut {
		m(&o)
	}
	return o
}

func requireActive(t *testing.T, px model.Proxy, r model.HealthCheckResult) {
	t.Helper()
	require.Equal(t, model.ProxyActive, r.Status, "error: %v", deref(r.ErrorMessage))
	require.Nil(t, r.ErrorMessage)
	require.NotNil(t, r.StatusCode)
	require.Equal(t, 200, *r.StatusCode)
	require.Equal(t, px.ID, r.ProxyID)
	require.Equal(t, px.Protocol, r.Protocol)
	require.Equal(t, 1, r.Attempts)
	require.Greater(t, r.LatencyMs, 0.0)
	require.Equal(t, time.UTC, r.CheckedAt.Location())
	require.WithinDuration(t, time.Now(), r.CheckedAt, 5*time.Second)
}

func requireInactive(t *testing.T, r model.HealthCheckResult, code int, msgHas ...string) {
	t.Helper()
	require.Equal(t, model.ProxyInactive, r.Status)
	if code == 0 {
		require.Nil(t, r.StatusCode, "status code")
	} else {
		require.NotNil(t, r.StatusCode)
		require.Equal(t, code, *r.StatusCode)
	}
	require.NotNil(t, r.ErrorMessage)
	for _, s := range msgHas {
		require.Contains(t, strings.ToLower(*r.ErrorMessage), strings.ToLower(s))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestProbeProtocols(t *testing.T) {
	t.Parallel()
	tg, p, httpOK, httpsOK := startProbing(t)
	ctx := context.Background()

	fwd := proxytest.HTTP(t, proxytest.HTTPConfig{})
	fwdAuth := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "s3cret:/@"})
	conn := proxytest.HTTP(t, proxytest.HTTPConfig{ConnectOnly: true})
	connAuth := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "s3cret", ConnectOnly: true})
	s5 := proxytest.SOCKS5(t, "", "").Port
	s5Auth := proxytest.SOCKS5(t, "bot", "s3cret").Port
	s4 := proxytest.SOCKS4(t, "").Port
	s4User := proxytest.SOCKS4(t, "bot").Port

	cases := []struct {
		name   string
		proxy  model.Proxy
		target string
		check  func(t *testing.T)
	}{
		{"http forward, http target", proxyAt(model.ProtocolHTTP, fwd.Port, nil), httpOK,
			func(t *testing.T) { require.EqualValues(t, 1, fwd.Forwards.Load()) }},
		{"http forward with credentials", proxyAt(model.ProtocolHTTP, fwdAuth.Port, creds("bot", "s3cret:/@")), httpOK, nil},
		{"http proxy, https target through CONNECT", proxyAt(model.ProtocolHTTP, fwd.Port, nil), httpsOK,
			func(t *testing.T) { require.EqualValues(t, 1, fwd.Connects.Load()) }},
		{"https proxy, https target", proxyAt(model.ProtocolHTTPS, conn.Port, nil), httpsOK, nil},
		{"https proxy, http target tunnelled", proxyAt(model.ProtocolHTTPS, conn.Port, nil), httpOK,
			func(t *testing.T) { require.EqualValues(t, 2, conn.Connects.Load()) }},
		{"https proxy with credentials, http target", proxyAt(model.ProtocolHTTPS, connAuth.Port, creds("bot", "s3cret")), httpOK, nil},
		{"https proxy with credentials, https target", proxyAt(model.ProtocolHTTPS, connAuth.Port, creds("bot", "s3cret")), httpsOK, nil},
		{"socks5", proxyAt(model.ProtocolSOCKS5, s5, nil), httpOK, nil},
		{"socks5, https target", proxyAt(model.ProtocolSOCKS5, s5, nil), httpsOK, nil},
		{"socks5 with user/password", proxyAt(model.ProtocolSOCKS5, s5Auth, creds("bot", "s3cret")), httpOK, nil},
		{"socks4", proxyAt(model.ProtocolSOCKS4, s4, nil), httpOK, nil},
		{"socks4a host name", proxyAt(model.ProtocolSOCKS4, s4, nil), fmt.Sprintf("http://localhost:%d/ok", serverPort(tg.http)), nil},
		{"socks4 user id", proxyAt(model.ProtocolSOCKS4, s4User, creds("bot", "ignored")), httpsOK, nil},
	}
	// Sequential: some cases count what earlier ones sent through a proxy.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.Probe(ctx, c.proxy, opts(c.target))
			requireActive(t, c.proxy, r)
			if c.check != nil {
				c.check(t)
			}
		})
	}
}

func TestProbeFailures(t *testing.T) {
	t.Parallel()
	tg, p, httpOK, httpsOK := startProbing(t)
	ctx := context.Background()
	fwd := proxytest.HTTP(t, proxytest.HTTPConfig{})
	fwdPort := fwd.Port

	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := p.Probe(ctx, px, opts(tg.http.URL+"/slow?ms=300", func(o *model.HealthCheckOptions) { o.SlowThresholdMs = 100 }))
		require.Equal(t, model.ProxySlow, r.Status)
		require.Nil(t, r.ErrorMessage)
		require.Equal(t, 200, *r.StatusCode)
		require.GreaterOrEqual(t, r.LatencyMs, 300.0)
		// The same answer under the threshold is active.
		r = p.Probe(ctx, px, opts(tg.http.URL+"/slow?ms=300", func(o *model.HealthCheckOptions) { o.SlowThresholdMs = 5000 }))
		require.Equal(t, model.ProxyActive, r.Status)
	})
	t.Run("wrong status code", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := p.Probe(ctx, px, opts(tg.http.URL+"/status/503"))
		requireInactive(t, r, 503, "unexpected status code 503 (expected 200)")
		r = p.Probe(ctx, px, opts(tg.http.URL+"/status/503", func(o *model.HealthCheckOptions) { o.ExpectedStatusCodes = []int{200, 503} }))
		require.Equal(t, model.ProxyActive, r.Status)
		require.Equal(t, 503, *r.StatusCode)
	})
	t.Run("refused connection", func(t *testing.T) {
		t.Parallel()
		for _, proto := range []model.Protocol{model.ProtocolHTTP, model.ProtocolHTTPS, model.ProtocolSOCKS4, model.ProtocolSOCKS5} {
			px := proxyAt(proto, natstest.FreePort(t), creds("bot", "hunter2"))
			r := p.Probe(ctx, px, opts(httpOK, func(o *model.HealthCheckOptions) { o.Attempts = 3 }))
			requireInactive(t, r, 0, "refused")
			require.Equal(t, 3, r.Attempts, string(proto))
			require.NotContains(t, *r.ErrorMessage, "hunter2")
		}
	})
	t.Run("timeout at the target", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		start := time.Now()
		r := p.Probe(ctx, px, opts(tg.http.URL+"/hang", func(o *model.HealthCheckOptions) { o.Timeout = 0.3 }))
		requireInactive(t, r, 0, "timeout", "300ms")
		require.GreaterOrEqual(t, r.LatencyMs, 290.0)
		require.Less(t, time.Since(start), 3*time.Second)
	})
	t.Run("timeout at a silent proxy", func(t *testing.T) {
		t.Parallel()
		silent := proxytest.Silent(t).Port
		for _, proto := range []model.Protocol{model.ProtocolHTTP, model.ProtocolHTTPS, model.ProtocolSOCKS4, model.ProtocolSOCKS5} {
			px := proxyAt(proto, silent, nil)
			start := time.Now()
			r := p.Probe(ctx, px, opts(httpOK, func(o *model.HealthCheckOptions) { o.Timeout = 0.2; o.Attempts = 2 }))
			requireInactive(t, r, 0, "timeout")
			require.Equal(t, 2, r.Attempts)
			require.Less(t, time.Since(start), 2*time.Second, string(proto))
		}
	})
	t.Run("bad credentials", func(t *testing.T) {
		t.Parallel()
		fwdAuth := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "right"})
		connAuth := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "right", ConnectOnly: true})
		s5Auth := proxytest.SOCKS5(t, "bot", "right").Port
		s4User := proxytest.SOCKS4(t, "bot").Port
		wrong := creds("bot", "wrong-Pa55")
		cases := []struct {
			px     model.Proxy
			target string
			code   int
			msg    string
		}{
			{proxyAt(model.ProtocolHTTP, fwdAuth.Port, wrong), httpOK, 407, "proxy authentication failed"},
			{proxyAt(model.ProtocolHTTP, fwdAuth.Port, nil), httpOK, 407, "proxy authentication failed"},
			{proxyAt(model.ProtocolHTTP, fwdAuth.Port, wrong), httpsOK, 0, "proxy authentication failed"},
			{proxyAt(model.ProtocolHTTPS, connAuth.Port, wrong), httpOK, 0, "proxy authentication failed"},
			{proxyAt(model.ProtocolHTTPS, connAuth.Port, wrong), httpsOK, 0, "proxy authentication failed"},
			{proxyAt(model.ProtocolSOCKS5, s5Auth, wrong), httpOK, 0, "proxy authentication failed"},
			{proxyAt(model.ProtocolSOCKS5, s5Auth, nil), httpOK, 0, "socks"},
			{proxyAt(model.ProtocolSOCKS4, s4User, creds("mallory", "x")), httpOK, 0, "rejected"},
		}
		for i, c := range cases {
			r := p.Probe(ctx, c.px, opts(c.target))
			requireInactive(t, r, c.code, c.msg)
			require.NotContains(t, *r.ErrorMessage, "wrong-Pa55", "case %d", i)
		}
	})
	t.Run("redirects", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := p.Probe(ctx, px, opts(tg.http.URL+"/redirect"))
		require.Equal(t, model.ProxyActive, r.Status)
		require.Equal(t, 200, *r.StatusCode)
		r = p.Probe(ctx, px, opts(tg.http.URL+"/redirect", func(o *model.HealthCheckOptions) { o.AllowRedirects = false }))
		requireInactive(t, r, 302, "unexpected status code 302")
		r = p.Probe(ctx, px, opts(tg.http.URL+"/redirect", func(o *model.HealthCheckOptions) {
			o.AllowRedirects = false
			o.ExpectedStatusCodes = []int{302}
		}))
		require.Equal(t, model.ProxyActive, r.Status)
	})
	t.Run("headers", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolSOCKS5, proxytest.SOCKS5(t, "", "").Port, nil)
		r := p.Probe(ctx, px, opts(tg.http.URL+"/header", func(o *model.HealthCheckOptions) {
			o.Headers = map[string]string{"X-Probe": "yes", "Host": "probe.test"}
		}))
		require.Equal(t, model.ProxyActive, r.Status, deref(r.ErrorMessage))
		r = p.Probe(ctx, px, opts(tg.http.URL+"/header"))
		requireInactive(t, r, 400)
	})
	t.Run("attempts stop at the first success", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := p.Probe(ctx, px, opts(tg.http.URL+"/flaky?key=a&n=2", func(o *model.HealthCheckOptions) { o.Attempts = 5 }))
		require.Equal(t, model.ProxyActive, r.Status)
		require.Equal(t, 3, r.Attempts)
		r = p.Probe(ctx, px, opts(tg.http.URL+"/flaky?key=b&n=2", func(o *model.HealthCheckOptions) { o.Attempts = 2 }))
		requireInactive(t, r, 500)
		require.Equal(t, 2, r.Attempts)
	})
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := p.Probe(cctx, px, opts(tg.http.URL+"/hang", func(o *model.HealthCheckOptions) { o.Attempts = 5; o.Timeout = 10 }))
		requireInactive(t, r, 0, "stopped")
		require.Equal(t, 1, r.Attempts)
	})
	t.Run("https target with an untrusted certificate", func(t *testing.T) {
		t.Parallel()
		px := proxyAt(model.ProtocolHTTP, fwdPort, nil)
		r := health.NewProber(nil).Probe(ctx, px, opts(httpsOK))
		requireInactive(t, r, 0, "certificate")
	})
}

func TestDecide(t *testing.T) {
	t.Parallel()
	const (
		A = model.ProxyActive
		I = model.ProxyInactive
		S = model.ProxySlow
		B = model.ProxyBanned
	)
	cases := []struct {
		current, probed  model.ProxyStatus
		failures, thresh int
		want             model.ProxyStatus
	}{
		{A, A, 0, 3, A},
		{A, S, 0, 3, S},
		{S, A, 0, 3, A},
		{I, A, 0, 3, A}, // recovers on its first good check
		{I, S, 0, 3, S},
		{A, I, 1, 3, A}, // under the threshold: keeps its status
		{A, I, 2, 3, A},
		{A, I, 3, 3, I},
		{S, I, 2, 3, S},
		{S, I, 3, 3, I},
		{I, I, 9, 3, I},
		{A, I, 1, 1, I},
		{A, I, 1, 0, I}, // a threshold under 1 counts as 1
		{B, A, 0, 3, B}, // banned is never changed by a check
		{B, S, 0, 3, B},
		{B, I, 5, 1, B},
	}
	for _, c := range cases {
		require.Equal(t, c.want, health.Decide(c.current, c.probed, c.failures, c.thresh), "%+v", c)
	}
}

func TestResolveOptions(t *testing.T) {
	t.Parallel()
	_, err := health.Resolve(nil, nil)
	require.ErrorIs(t, err, model.ErrBadRequest)
	require.ErrorContains(t, err, "target_url is required")

	poolOpts := health.DefaultOptions()
	poolOpts.TargetURL = "http://127.0.0.1:1/pool"
	poolOpts.Attempts = 3
	hc := &model.HealthCheck{Enabled: true, IntervalSeconds: 60, FailureThreshold: 2, Options: &poolOpts}
	o, err := health.Resolve(hc, nil)
	require.NoError(t, err)
	require.Equal(t, poolOpts, o)

	over := health.DefaultOptions() // as a request's {"timeout": 1} decodes
	over.Timeout = 1
	o, err = health.Resolve(hc, &over)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:1/pool", o.TargetURL, "an override without target takes the pool's")
	require.Equal(t, 1, o.Attempts, "the override replaces the pool's options")
	require.Equal(t, 1.0, o.Timeout)

	over.ExpectedStatusCodes = []int{}
	o, err = health.Resolve(hc, &over)
	require.NoError(t, err)
	require.Equal(t, []int{200}, o.ExpectedStatusCodes)

	for _, bad := range []func(*model.HealthCheckOptions){
		func(o *model.HealthCheckOptions) { o.TargetURL = "ftp://x/y" },
		func(o *model.HealthCheckOptions) { o.TargetURL = "/relative" },
		func(o *model.HealthCheckOptions) { o.Timeout = 0 },
		func(o *model.HealthCheckOptions) { o.Timeout = 61 },
		func(o *model.HealthCheckOptions) { o.Attempts = 6 },
		func(o *model.HealthCheckOptions) { o.ExpectedStatusCodes = []int{99} },
		func(o *model.HealthCheckOptions) { o.SlowThresholdMs = -1 },
	} {
		x := health.DefaultOptions()
		x.TargetURL = "http://127.0.0.1:1/"
		bad(&x)
		_, err := health.Resolve(nil, &x)
		require.ErrorIs(t, err, model.ErrBadRequest, "%+v", x)
	}
}
