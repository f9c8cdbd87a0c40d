package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// Everything here listens on 127.0.0.1 and dials only 127.0.0.1.

const token = "t0ken-for-tests"

// env is an embedded NATS server with two workers, a client, and every
// event the workers publish.
type env struct {
	t     testing.TB
	srv   *server.Server
	c     *client.Client
	clock *workertest.Clock // nil: real time

	workers []*workertest.Worker
	js      jetstream.JetStream
	evBase  uint64 // the events stream's last sequence when the capture began

	mu     sync.Mutex
	cond   *sync.Cond
	events []client.Event
}

type envConfig struct {
	clock bool // share a hand-moved clock between the workers and the gateways
	grace time.Duration
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	e := &env{t: t, srv: natstest.RunServer(t)}
	e.cond = sync.NewCond(&e.mu)
	wcfg := workertest.Config{ExpiryGrace: cfg.grace}
	if cfg.clock {
		e.clock = workertest.NewClock()
		wcfg.Clock = e.clock.Now
	}
	for range 2 {
		e.workers = append(e.workers, workertest.Start(t, natstest.Connect(t, e.srv), wcfg))
	}
	nc := natstest.Connect(t, e.srv)
	e.c = client.New(nc)
	sub, err := e.c.SubscribeEvents(context.Background(), func(ev client.Event) {
		e.mu.Lock()
		e.events = append(e.events, ev)
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(sub.Stop)
	e.js, err = jetstream.New(nc)
	require.NoError(t, err)
	e.evBase = e.eventsLastSeq()
	return e
}

func (e *env) eventsLastSeq() uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, events.StreamName)
	require.NoError(e.t, err)
	info, err := s.Info(ctx)
	require.NoError(e.t, err)
	return info.State.LastSeq
}

// settleEvents waits until the capture holds every event both workers
// published so far. Two workers publish on their own, so an event seen
// from one (or a reply) says nothing of the other's: each publisher is
// flushed (its events are in the stream), then the capture is awaited
// until it holds as many events as the stream gained since it began.
// Only events of requests that were answered before the call are covered.
func (e *env) settleEvents() {
	e.t.Helper()
	workertest.FlushEvents(e.t, e.workers...)
	want := int(e.eventsLastSeq() - e.evBase)
	e.waitEvents(want, func(client.Event) bool { return true })
}

// envWithGateway is what most tests start with: an env on real time, the
// targets to fetch, and one gateway with opts.
func envWithGateway(t testing.TB, opts ...gateway.Option) (*env, *targets, *gw) {
	t.Helper()
	e := newEnv(t, envConfig{})
	return e, startTargets(t), e.gateway(opts...)
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// waitEvents waits until n events match (or fails after 20 s) and returns
// those seen so far that match.
func (e *env) waitEvents(n int, match func(client.Event) bool) []client.Event {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	stop := time.AfterFunc(20*time.Second, func() { e.mu.Lock(); e.cond.Broadcast(); e.mu.Unlock() })
	defer stop.Stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		var got []client.Event
		for _, ev := range e.events {
			if match(ev) {
				got = append(got, ev)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waited 20s for %d matching events, saw %d", n, len(got))
		}
		e.cond.Wait()
	}
}

// count returns how many events seen so far match.
func (e *env) count(match func(client.Event) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if match(ev) {
			n++
		}
	}
	return n
}

func named(name, pool string) func(client.Event) bool {
	return func(ev client.Event) bool { return ev.Name == name && (pool == "" || ev.PoolName() == pool) }
}

func ofLease(name, leaseID string) func(client.Event) bool {
	return func(ev client.Event) bool { l := ev.Lease(); return ev.Name == name && l != nil && l.ID == leaseID }
}

// released waits for the release event of a lease.
func (e *env) released(leaseID string) model.ReleaseEvent {
	e.t.Helper()
	return *e.waitEvents(1, ofLease("released", leaseID))[0].Release
}

// pool creates a pool whose proxies are the given upstreams.
func (e *env) pool(name string, maxConc int, ups ...upstream) []model.Proxy {
	e.t.Helper()
	_, err := e.c.CreatePool(e.ctx(), model.PoolCreateRequest{Name: name})
	require.NoError(e.t, err)
	if len(ups) == 0 {
		return nil
	}
	var in []model.ProxyInput
	for _, u := range ups {
		p := u.protocol
		pi := model.ProxyInput{Host: u.host, Port: u.port, Protocol: &p, Credentials: u.creds}
		if maxConc > 0 {
			m := maxConc
			pi.MaxConcurrency = &m
		}
		in = append(in, pi)
	}
	px, err := e.c.AddProxies(e.ctx(), model.ProxiesAddRequest{PoolName: name, Proxies: in})
	require.NoError(e.t, err)
	return px
}

func (e *env) stats(pool string) model.PoolStatsSnapshot {
	e.t.Helper()
	st, err := e.c.Stats(e.ctx(), pool)
	require.NoError(e.t, err)
	return st
}

// upstream is a proxy to put in a pool.
type upstream struct {
	protocol model.Protocol
	host     string
	port     int
	creds    *model.Credentials
}

func up(p model.Protocol, px *proxytest.Proxy, user, pass string) upstream {
	u := upstream{protocol: p, host: px.Host, port: px.Port}
	if user != "" {
		u.creds = &model.Credentials{User: user, Password: pass}
	}
	return u
}

// httpPool starts a plain HTTP proxy (no login) for the test and creates
// pool name with it as its only proxy, at most maxConc leases at once (0:
// no limit): the pool most tests lease from. It returns the proxy.
func (e *env) httpPool(name string, maxConc int) *proxytest.Proxy {
	e.t.Helper()
	px := proxytest.HTTP(e.t, proxytest.HTTPConfig{})
	e.pool(name, maxConc, up(model.ProtocolHTTP, px, "", ""))
	return px
}

// httpProxies starts n HTTP proxies that want user:pass (no login if user
// is empty) and returns them and their upstreams, to put in a pool.
func httpProxies(t testing.TB, n int, user, pass string) ([]*proxytest.Proxy, []upstream) {
	t.Helper()
	var pxs []*proxytest.Proxy
	var ups []upstream
	for range n {
		px := proxytest.HTTP(t, proxytest.HTTPConfig{User: user, Password: pass})
		pxs = append(pxs, px)
		ups = append(ups, up(model.ProtocolHTTP, px, user, pass))
	}
	return pxs, ups
}

// deadUpstream is a port nothing listens on.
func deadUpstream(t *testing.T, p model.Protocol) upstream {
	t.Helper()
	return upstream{protocol: p, host: "127.0.0.1", port: natstest.FreePort(t)}
}

// gw is a running gateway with its own NATS connection.
type gw struct {
	g         *gateway.Gateway
	httpAddr  string
	socksAddr string
}

func (e *env) gateway(opts ...gateway.Option) *gw {
	e.t.Helper()
	ts, err := gateway.ParseTokens(strings.NewReader(token + "\nlimited pools=allowed consumer=bob\n"))
	require.NoError(e.t, err)
	all := []gateway.Option{gateway.WithTokens(ts), gateway.WithRequestTimeout(5 * time.Second),
		gateway.WithDialTimeout(2 * time.Second), gateway.WithLogger(zaptest.NewLogger(e.t, zaptest.Level(zap.InfoLevel)))}
	if e.clock != nil {
		all = append(all, gateway.WithClock(e.clock.Now))
	}
	all = append(all, opts...)
	nc := natstest.Connect(e.t, e.srv)
	g, err := gateway.New(gateway.NewClientLeaser(client.New(nc, client.WithTimeout(5*time.Second))), all...)
	require.NoError(e.t, err)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	go func() { _ = g.ServeHTTPProxy(hl) }()
	go func() { _ = g.ServeSOCKS5(sl) }()
	w := &gw{g: g, httpAddr: hl.Addr().String(), socksAddr: sl.Addr().String()}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return w
}

// proxyURL is the gateway's HTTP proxy URL for a username and token.
func (w *gw) proxyURL(user, tok string) *url.URL {
	u := &url.URL{Scheme: "http", Host: w.httpAddr}
	if user != "" || tok != "" {
		u.User = url.UserPassword(user, tok)
	}
	return u
}

// httpClient goes through the gateway, one connection per request unless
// keepAlive, trusting the test targets' certificate.
func (w *gw) httpClient(user, tok string, keepAlive bool, tg *targets) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyURL(w.proxyURL(user, tok)), DisableKeepAlives: !keepAlive, MaxConnsPerHost: 0}
	if tg != nil {
		tr.TLSClientConfig = tg.tls.Clone()
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// targets are the sites fetched through the gateway.
type targets struct {
	http, https *httptest.Server
	tls         *tls.Config
}

func startTargets(t testing.TB) *targets {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.URL.Query().Get("n"))
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"Proxy-Authorization", "X-Forwarded-For", "X-Client"} {
			fmt.Fprintf(w, "%s=%s\n", k, r.Header.Get(k))
		}
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		buf := make([]byte, 32<<10)
		for n > 0 {
			m := min(n, len(buf))
			_, _ = w.Write(buf[:m])
			n -= m
		}
	})
	tg := &targets{http: httptest.NewServer(mux), https: httptest.NewTLSServer(mux)}
	t.Cleanup(tg.http.Close)
	t.Cleanup(tg.https.Close)
	tg.tls = &tls.Config{RootCAs: tg.https.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	return tg
}

// get fetches url with c and returns status, body and the lease header.
func get(t *testing.T, c *http.Client, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err, url)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body), resp.Header
}
