// Package gateway is pharox's proxy gateway: an HTTP proxy (plain HTTP
// forwarding and CONNECT tunnels) and a SOCKS5 proxy that lease an upstream
// proxy from a pharox pool for each request, tunnel or session, and go
// through it in its own protocol (http, https, socks4, socks5). Clients in
// any language then need nothing but a proxy URL:
//
//	http://pool=latam,country=AR,session=checkout1:TOKEN@gateway:8080
//
// The username carries the lease request (comma-separated key=value pairs),
// the password is one of the gateway's tokens. See the README section "One
// endpoint for every language: the gateway".
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

// Defaults of the options.
const (
	DefaultConsumer       = "gateway"
	DefaultRetries        = 2
	DefaultLeaseSeconds   = 60
	DefaultRequestTimeout = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 64 << 10
	// CloseWait is how long an upstream connection may take to close
	// after the gateway closed its side, before its lease is released
	// anyway.
	CloseWait = 5 * time.Second
)

// Gateway serves the HTTP and SOCKS5 proxies. It is safe for concurrent
// use; New, then ServeHTTPProxy and/or ServeSOCKS5, then Shutdown.
type Gateway struct {
	leaser         Leaser
	log            *zap.Logger
	tokens         *Tokens
	pool           string
	consumer       string
	retries        int
	leaseSeconds   int
	requestTimeout time.Duration
	dialTimeout    time.Duration
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxHeaderBytes int
	closeWait      time.Duration
	failOnBlock    bool
	clock          func() time.Time
	dialer         *proxydial.Dialer

	sessions sessions
	bufs     bufPool
	rp       *httputil.ReverseProxy
	metrics  *metrics

	mu        sync.Mutex
	closing   bool
	servers   []*http.Server
	listeners []net.Listener
	tunnels   map[*tunnel]struct{}
	wg        sync.WaitGroup // tunnels and SOCKS connections
	bg        sync.WaitGroup // closes and releases after the client has its answer
}

// background runs fn after the client has its answer; Shutdown waits for
// it.
func (g *Gateway) background(fn func()) {
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		fn()
	}()
}

// Option configures New; a value that cannot work is an error from New.
type Option func(*Gateway) error

// WithTokens sets the client tokens. Without any, clients give no
// credentials (and a username, if any, is still read); the listeners must
// then be on loopback.
func WithTokens(ts *Tokens) Option { return func(g *Gateway) error { g.tokens = ts; return nil } }

// WithPool sets the pool of a request whose username names none.
func WithPool(pool string) Option {
	return func(g *Gateway) error {
		if pool != "" && !model.ValidName(pool) {
			return fmt.Errorf("pool must match ^[A-Za-z0-9_-]{1,128}$, got %q", pool)
		}
		g.pool = pool
		return nil
	}
}

// WithConsumer sets the consumer a request leases as unless its username or
// token says otherwise (default "gateway").
func WithConsumer(consumer string) Option {
	return func(g *Gateway) error {
		if !model.ValidName(consumer) {
			return fmt.Errorf("consumer must match ^[A-Za-z0-9_-]{1,128}$, got %q", consumer)
		}
		g.consumer = consumer
		return nil
	}
}

// WithRetries sets how many other proxies are tried after an upstream
// failure before answering 502 (default 2).
func WithRetries(n int) Option {
	return func(g *Gateway) error {
		if n < 0 || n > 10 {
			return fmt.Errorf("retries must be 0..10, got %d", n)
		}
		g.retries = n
		return nil
	}
}

// WithLeaseSeconds sets the duration of a request's own lease, renewed
// while in use (default 60): what a crashed gateway holds at most.
func WithLeaseSeconds(n int) Option {
	return func(g *Gateway) error {
		if n < 1 || n > model.MaxDurationSeconds {
			return fmt.Errorf("lease seconds must be 1..%d, got %d", model.MaxDurationSeconds, n)
		}
		g.leaseSeconds = n
		return nil
	}
}

func positive(name string, d time.Duration, set *time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s must be positive, got %s", name, d)
	}
	*set = d
	return nil
}

// WithRequestTimeout bounds each call to the workers (default 10 s; an
// acquire that waits gets its wait on top).
func WithRequestTimeout(d time.Duration) Option {
	return func(g *Gateway) error { return positive("request timeout", d, &g.requestTimeout) }
}

// WithDialTimeout bounds the connection and handshake with an upstream
// proxy (default 10 s); running out is the proxy's failure.
func WithDialTimeout(d time.Duration) Option {
	return func(g *Gateway) error { return positive("dial timeout", d, &g.dialTimeout) }
}

// WithHeaderTimeout bounds how long a client may take to send its request
// headers or its SOCKS5 handshake (default 10 s).
func WithHeaderTimeout(d time.Duration) Option {
	return func(g *Gateway) error { return positive("header timeout", d, &g.headerTimeout) }
}

// WithIdleTimeout bounds how long a kept-alive client connection may wait
// for its next request (default 2 min).
func WithIdleTimeout(d time.Duration) Option {
	return func(g *Gateway) error { return positive("idle timeout", d, &g.idleTimeout) }
}

// WithMaxHeaderBytes bounds a request's headers (default 64 KiB; more is
// 431).
func WithMaxHeaderBytes(n int) Option {
	return func(g *Gateway) error {
		if n < 1024 {
			return fmt.Errorf("max header bytes must be at least 1024, got %d", n)
		}
		g.maxHeaderBytes = n
		return nil
	}
}

// WithCloseWait sets how long an upstream connection may take to close
// before its lease is released anyway (default CloseWait).
func WithCloseWait(d time.Duration) Option {
	return func(g *Gateway) error { return positive("close wait", d, &g.closeWait) }
}

// WithFailOnBlock makes a 403 or 429 from the target count as the proxy's
// failure (it was blocked) when the lease is released.
func WithFailOnBlock(on bool) Option {
	return func(g *Gateway) error { g.failOnBlock = on; return nil }
}

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Option {
	return func(g *Gateway) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		g.log = l
		return nil
	}
}

// WithClock sets the clock that lease and session times are reckoned by
// (tests move it by hand; default time.Now).
func WithClock(now func() time.Time) Option {
	return func(g *Gateway) error {
		if now == nil {
			return errors.New("clock is nil")
		}
		g.clock = now
		return nil
	}
}

// WithDialer sets the dialer of upstream proxies (default: a net.Dialer
// with the system's settings).
func WithDialer(d *net.Dialer) Option {
	return func(g *Gateway) error {
		if d == nil {
			return errors.New("dialer is nil")
		}
		g.dialer = &proxydial.Dialer{Forward: d}
		return nil
	}
}

// New returns a gateway that leases through l.
func New(l Leaser, opts ...Option) (*Gateway, error) {
	if l == nil {
		return nil, errors.New("gateway: leaser is nil")
	}
	g := &Gateway{
		leaser: l, log: zap.NewNop(), tokens: &Tokens{}, consumer: DefaultConsumer, retries: DefaultRetries,
		leaseSeconds: DefaultLeaseSeconds, requestTimeout: DefaultRequestTimeout, dialTimeout: DefaultDialTimeout,
		headerTimeout: DefaultHeaderTimeout, idleTimeout: DefaultIdleTimeout, maxHeaderBytes: DefaultMaxHeaderBytes,
		closeWait: CloseWait, clock: time.Now, dialer: &proxydial.Dialer{Forward: &net.Dialer{}},
		tunnels: map[*tunnel]struct{}{},
	}
	for _, o := range opts {
		if err := o(g); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if g.tokens == nil {
		g.tokens = &Tokens{}
	}
	g.rp = g.reverseProxy()
	g.metrics = newMetrics(g)
	return g, nil
}

// ErrNoTokens refuses a listener off loopback when no token is configured.
var ErrNoTokens = errors.New("no client token is configured, so the gateway listens on loopback only")

// checkListener refuses to serve anyone but this machine without tokens.
func (g *Gateway) checkListener(ln net.Listener) error {
	if g.tokens.Len() > 0 {
		return nil
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s is not a loopback address", ErrNoTokens, ln.Addr())
}

// ErrClosed is returned by the Serve methods after Shutdown.
var ErrClosed = errors.New("gateway: closed")

// open admits a Serve method's listener and registers what Shutdown must
// close: srv, which closes ln itself, or (srv nil) ln. After Shutdown began
// it closes ln and returns ErrClosed.
func (g *Gateway) open(ln net.Listener, srv *http.Server) error {
	if err := g.checkListener(ln); err != nil {
		return err
	}
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	if srv != nil {
		g.servers = append(g.servers, srv)
	} else {
		g.listeners = append(g.listeners, ln)
	}
	g.mu.Unlock()
	return nil
}

// ServeHTTPProxy serves the HTTP proxy on ln (wrap it with tls.NewListener
// for an HTTPS proxy) until Shutdown, then returns ErrClosed.
func (g *Gateway) ServeHTTPProxy(ln net.Listener) error {
	srv := &http.Server{
		Handler:           http.HandlerFunc(g.serveHTTP),
		ReadHeaderTimeout: g.headerTimeout,
		IdleTimeout:       g.idleTimeout,
		MaxHeaderBytes:    g.maxHeaderBytes,
		ErrorLog:          g.stdLog(),
	}
	// A proxy speaks HTTP/1.1 to its clients, also over TLS.
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	if err := g.open(ln, srv); err != nil {
		return err
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ErrClosed
}

// tunnel is a connection the gateway must close itself on shutdown
// (a CONNECT tunnel, a SOCKS5 connection).
type tunnel struct {
	mu    sync.Mutex
	close func()
}

// set changes what closes the tunnel (its connections change as it opens).
func (t *tunnel) set(close func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.close = close
}

func (t *tunnel) shut() {
	t.mu.Lock()
	close := t.close
	t.mu.Unlock()
	close()
}

// track registers a tunnel; false when the gateway is shutting down.
func (g *Gateway) track(close func()) (*tunnel, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return nil, false
	}
	t := &tunnel{close: close}
	g.tunnels[t] = struct{}{}
	g.wg.Add(1)
	return t, true
}

func (g *Gateway) untrack(t *tunnel) {
	g.mu.Lock()
	delete(g.tunnels, t)
	g.mu.Unlock()
	g.wg.Done()
}

// Shutdown stops accepting, lets requests and tunnels finish until ctx
// ends (the drain timeout), then closes those left; every lease of their
// own is released as its use ends. Session leases are left to expire:
// other gateway instances may be using them. It returns ctx's error when
// it had to cut tunnels short.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	servers := g.servers
	listeners := g.listeners
	g.mu.Unlock()
	for _, ln := range listeners {
		_ = ln.Close()
	}
	var swg sync.WaitGroup
	for _, srv := range servers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if srv.Shutdown(ctx) != nil {
				_ = srv.Close()
			}
		}()
	}
	tunnelsDone := make(chan struct{})
	go func() { g.wg.Wait(); close(tunnelsDone) }()
	var err error
	select {
	case <-tunnelsDone:
	case <-ctx.Done():
		err = ctx.Err()
		g.mu.Lock()
		left := len(g.tunnels)
		for t := range g.tunnels {
			t.shut()
		}
		g.mu.Unlock()
		g.log.Info("drain timeout: closing tunnels", zap.Int("tunnels", left))
		<-tunnelsDone
	}
	swg.Wait()
	g.bg.Wait()
	return err
}

// stdLog is a *log.Logger for net/http's own messages, at debug.
func (g *Gateway) stdLog() *log.Logger {
	l, err := zap.NewStdLogAt(g.log, zap.DebugLevel)
	if err != nil { // only for a level zap does not know
		return log.New(io.Discard, "", 0)
	}
	return l
}
