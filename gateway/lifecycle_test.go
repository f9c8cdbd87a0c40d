package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
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

// connectTunnel opens a CONNECT tunnel through the gateway and returns the
// connection and the lease id the gateway answered with.
func connectTunnel(t *testing.T, w *gw, user, target string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, err := net.Dial("tcp", w.httpAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, basic(user, token))
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return conn, br, resp.Header.Get(gateway.HeaderLeaseID)
}

func echoOnce(t *testing.T, conn net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	_, err := io.WriteString(conn, msg+"\n")
	require.NoError(t, err)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, msg+"\n", line)
}

// TestTunnelEnds: a tunnel whose client goes away releases its lease at
// once; one whose lease ends under it (released behind its back, so its
// renewal fails) is closed at expires_at.
func TestTunnelEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	echo := proxytest.Echo(t)
	w := e.gateway(gateway.WithLeaseSeconds(1))
	px := e.httpPool("tunnels", 0)

	conn, br, leaseID := connectTunnel(t, w, "pool=tunnels", echo)
	echoOnce(t, conn, br, "hello")
	require.NoError(t, conn.Close())
	ev := e.released(leaseID)
	require.Less(t, ev.LeaseDurationMs, 1000.0, "released at once, well before its 1 s lease would lapse")
	require.Zero(t, px.Current())

	// A tunnel outliving its 1 s lease keeps it by renewal...
	conn, br, leaseID = connectTunnel(t, w, "pool=tunnels", echo)
	e.waitEvents(2, ofLease("renewed", leaseID))
	echoOnce(t, conn, br, "still here")
	// ...until the lease ends behind its back: closed at expires_at.
	l, err := e.c.Release(e.ctx(), model.ReleaseRequest{LeaseID: leaseID})
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadString('\n')
	require.ErrorIs(t, err, io.EOF, "the gateway closed the tunnel")
	require.WithinDuration(t, l.ExpiresAt, time.Now(), 1500*time.Millisecond)
}

// TestNoProxyFree: 503 with Retry-After when nothing is free; with wait, the
// request gets the proxy once it is released.
func TestNoProxyFree(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	e.httpPool("busy", 1)
	held, _, err := e.c.Acquire(e.ctx(), model.AcquireRequest{PoolName: "busy"})
	require.NoError(t, err)
	require.NotNil(t, held)

	resp, err := w.httpClient("pool=busy", token, false, tg).Get(tg.http.URL + "/ok")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "no_proxy_available")
	_, err = socksGet(t, w, "pool=busy", token, tg.http.URL+"/ok", tg)
	require.ErrorContains(t, err, "general SOCKS server failure")

	// Waiting: released while the request waits.
	done := make(chan int, 1)
	go func() {
		resp, err := w.httpClient("pool=busy,wait=20", token, false, tg).Get(tg.http.URL + "/ok")
		if err != nil {
			done <- 0
			return
		}
		_ = resp.Body.Close()
		done <- resp.StatusCode
	}()
	e.waitEvents(1, func(ev client.Event) bool { return ev.Name == "acquire_failed" && ev.PoolName() == "busy" })
	_, err = e.c.Release(e.ctx(), model.ReleaseRequest{LeaseID: held.ID})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, <-done)
}

// TestUpstreamFailures: a proxy that cannot be reached is released as
// failed and another lease is tried, 1 + retries in all, then 502; every
// lease is released.
func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t, gateway.WithRetries(2))
	e.pool("dead", 0, deadUpstream(t, model.ProtocolHTTP), deadUpstream(t, model.ProtocolSOCKS5), deadUpstream(t, model.ProtocolHTTP))
	for _, url := range []string{tg.http.URL + "/ok", tg.https.URL + "/ok"} {
		resp, err := w.httpClient("pool=dead,selector=random", token, false, tg).Get(url)
		if strings.HasPrefix(url, "https") {
			// CONNECT refused: net/http reports the proxy's status.
			require.ErrorContains(t, err, "Bad Gateway")
		} else {
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusBadGateway, resp.StatusCode)
			var eb model.ErrorBody
			require.NoError(t, json.Unmarshal(body, &eb))
			require.Equal(t, "upstream_failed", eb.Error.Code)
			require.Contains(t, eb.Error.Message, "3 upstream proxies tried")
		}
	}
	e.waitEvents(6, named("released", "dead"))
	// Waited for too: two workers publish on their own, so a lease's
	// acquired event may arrive after its released one.
	require.Len(t, e.waitEvents(6, named("acquired", "dead")), 6)
	require.Zero(t, e.stats("dead").TotalLeases)
}

// TestWorkerTrouble: no worker answering, or one that never replies, is a
// 502 (after --request-timeout); nothing is leased.
func TestWorkerTrouble(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	tg := startTargets(t)
	nc := natstest.Connect(t, srv)
	// A responder on another prefix's acquire that never replies.
	sub, err := nc.Subscribe("silent.acquire", func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for _, c := range []struct {
		prefix, code string
	}{{"nobody", "worker_unreachable"}, {"silent", "worker_timeout"}} {
		g, err := gateway.New(gateway.NewClientLeaser(client.New(natstest.Connect(t, srv), client.WithPrefix(c.prefix))),
			gateway.WithRequestTimeout(200*time.Millisecond))
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = g.ServeHTTPProxy(ln) }()
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		u, err := url.Parse("http://pool=p@" + ln.Addr().String())
		require.NoError(t, err)
		hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
		start := time.Now()
		resp, err := hc.Get(tg.http.URL + "/ok")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadGateway, resp.StatusCode, string(body))
		require.Contains(t, string(body), c.code)
		require.Less(t, time.Since(start), 3*time.Second)
	}
}
