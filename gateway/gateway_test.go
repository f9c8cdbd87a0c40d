package gateway_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/proxy"

	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

// socksGet fetches url through the gateway's SOCKS5 proxy with
// golang.org/x/net/proxy, the username carrying the lease request.
func socksGet(t *testing.T, w *gw, user, tok, url string, tg *targets) (string, error) {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", w.socksAddr, &proxy.Auth{User: user, Password: tok}, &net.Dialer{})
	require.NoError(t, err)
	tr := &http.Transport{DialContext: d.(proxy.ContextDialer).DialContext, DisableKeepAlives: true, TLSClientConfig: tg.tls.Clone()}
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestEveryUpstreamProtocol: plain HTTP forwarding, CONNECT tunnels and
// SOCKS5 through a leased proxy of each protocol, with the proxy's own
// credentials; every lease is released once its request is over.
func TestEveryUpstreamProtocol(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	httpPx := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "s3cret:/@"})
	connectPx := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "s3cret", ConnectOnly: true})
	s5 := proxytest.SOCKS5(t, "bot", "s3cret")
	s4 := proxytest.SOCKS4(t, "bot")
	cases := []struct {
		pool string
		up   upstream
		px   *proxytest.Proxy
	}{
		{"via-http", up(model.ProtocolHTTP, httpPx, "bot", "s3cret:/@"), httpPx},
		{"via-https", up(model.ProtocolHTTPS, connectPx, "bot", "s3cret"), connectPx},
		{"via-socks5", up(model.ProtocolSOCKS5, s5, "bot", "s3cret"), s5},
		{"via-socks4", up(model.ProtocolSOCKS4, s4, "bot", "unused"), s4}, // SOCKS4 has no password; a blank one is refused
	}
	for _, c := range cases {
		e.pool(c.pool, 1, c.up)
		// wait: a request may come before the previous one's release landed.
		user := "pool=" + c.pool + ",consumer=crawler-1,wait=5"
		hc := w.httpClient(user, token, true, tg)

		// Plain HTTP: the client's Proxy-Authorization stays with the gateway.
		code, body, hdr := get(t, hc, tg.http.URL+"/headers")
		require.Equal(t, http.StatusOK, code, "%s: %s", c.pool, body)
		require.Equal(t, "Proxy-Authorization=\nX-Forwarded-For=\nX-Client=\n", body, c.pool)
		ev := e.released(hdr.Get("X-Pharox-Lease-Id"))
		require.Equal(t, "crawler-1", ev.Lease.ConsumerName)
		require.Equal(t, hdr.Get("X-Pharox-Proxy-Id"), ev.Lease.ProxyID)

		// A second request on the kept-alive client connection: a lease of its own.
		code, body, hdr2 := get(t, hc, tg.http.URL+"/ok?n=2")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "ok 2", body)
		require.NotEqual(t, hdr.Get("X-Pharox-Lease-Id"), hdr2.Get("X-Pharox-Lease-Id"))
		e.released(hdr2.Get("X-Pharox-Lease-Id"))

		// CONNECT.
		code, body, _ = get(t, hc, tg.https.URL+"/ok?n=3")
		require.Equal(t, http.StatusOK, code, c.pool)
		require.Equal(t, "ok 3", body)
		hc.CloseIdleConnections() // the kept-alive tunnel holds its lease until it closes

		// SOCKS5, to an https and an http target.
		body, err := socksGet(t, w, user, token, tg.https.URL+"/ok?n=4", tg)
		require.NoError(t, err, c.pool)
		require.Equal(t, "ok 4", body)
		body, err = socksGet(t, w, user, token, tg.http.URL+"/ok?n=5", tg)
		require.NoError(t, err, c.pool)
		require.Equal(t, "ok 5", body)

		require.EqualValues(t, 5, c.px.Requests.Load(), c.pool)
		e.waitEvents(5, named("released", c.pool))
		require.Equal(t, 0, e.stats(c.pool).TotalLeases, c.pool)
		require.EqualValues(t, 0, c.px.Current(), c.pool)
		require.EqualValues(t, 1, c.px.Max(), "%s: one connection at a time (max_concurrency 1)", c.pool)
	}
}

// TestTargetAnswersPassThrough: the target's 5xx, 403 and 429 reach the
// client as they are and count as the lease's success.
func TestTargetAnswersPassThrough(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	e.httpPool("answers", 1)
	hc := w.httpClient("pool=answers", token, false, tg)
	for _, code := range []int{500, 503, 403, 429, 404} {
		got, _, hdr := get(t, hc, fmt.Sprintf("%s/status/%d", tg.http.URL, code))
		require.Equal(t, code, got)
		e.released(hdr.Get("X-Pharox-Lease-Id"))
	}
}
