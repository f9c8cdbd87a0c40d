package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

// Response headers that say which lease and proxy served a request.
const (
	HeaderLeaseID = "X-Pharox-Lease-Id"
	HeaderProxyID = "X-Pharox-Proxy-Id"
)

// serveHTTP is the HTTP proxy: CONNECT opens a tunnel, an absolute-URI
// request is forwarded; anything else is not a proxy request.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	user, pass, hasCreds := basicAuth(r.Header.Get("Proxy-Authorization"))
	tok, gerr := g.authenticate(hasCreds, pass)
	if gerr == nil && r.Method != http.MethodConnect && (!r.URL.IsAbs() || r.URL.Scheme != "http") {
		gerr = errBadRequest("not_a_proxy_request", fmt.Errorf("this is a proxy: send absolute http:// URIs or CONNECT (got %s %s)", r.Method, r.URL))
	}
	var sp *spec
	if gerr == nil {
		sp, gerr = g.resolve(user, tok)
	}
	if gerr != nil {
		g.metrics.answered(kindOf(r), start, gerr)
		gerr.write(w)
		g.log.Debug("refused", zap.String("kind", kindOf(r)), zap.Int("status", gerr.Status), zap.String("code", gerr.Code),
			zap.String("reason", gerr.Message), zap.Duration("took", time.Since(start)))
		return
	}
	if r.Method == http.MethodConnect {
		g.serveConnect(w, r, sp, start)
		return
	}
	g.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), specKey{}, &forward{sp: sp, start: start})))
}

func kindOf(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return KindConnect
	}
	return KindHTTP
}

// serveConnect opens a tunnel to the CONNECT target through a leased proxy.
func (g *Gateway) serveConnect(w http.ResponseWriter, r *http.Request, sp *spec, start time.Time) {
	target := r.Host
	if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
		gerr := errBadRequest("bad_target", fmt.Errorf("CONNECT target must be host:port, got %q", target))
		g.metrics.answered(KindConnect, start, gerr)
		gerr.write(w)
		return
	}
	u, upstream, gerr := g.obtainTunnel(r.Context(), sp, target)
	if gerr != nil {
		g.metrics.answered(KindConnect, start, gerr)
		gerr.write(w)
		g.logRefused(KindConnect, sp, target, gerr, start)
		return
	}
	t, ok := g.track(func() { _ = upstream.Close() })
	if !ok {
		_ = upstream.Close()
		u.end(OutcomeNone, "")
		gerr := &Error{Status: http.StatusServiceUnavailable, Code: "shutting_down", Message: "the gateway is shutting down", RetryAfter: 1}
		g.metrics.answered(KindConnect, start, gerr)
		gerr.write(w)
		return
	}
	defer g.untrack(t)
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = upstream.Close()
		u.end(OutcomeNone, "")
		g.metrics.answered(KindConnect, start, errClient(err))
		return
	}
	var pending []byte
	if n := brw.Reader.Buffered(); n > 0 {
		pending, _ = brw.Reader.Peek(n)
	}
	g.carry(KindConnect, t, u, client, pending, upstream, target, start, func() error {
		_, err := fmt.Fprintf(client, "HTTP/1.1 200 Connection established\r\n%s: %s\r\n%s: %s\r\n\r\n",
			HeaderLeaseID, u.lease.ID, HeaderProxyID, u.proxy.ID)
		return err
	})
}

func (g *Gateway) logRefused(kind string, sp *spec, target string, gerr *Error, start time.Time) {
	g.log.Debug("refused", zap.String("kind", kind), zap.String("pool", sp.pool), zap.String("target", target),
		zap.Int("status", gerr.Status), zap.String("code", gerr.Code), zap.String("reason", gerr.Message),
		zap.Duration("took", time.Since(start)))
}

func (g *Gateway) logTunnel(kind string, u *use, target string, c copied, start time.Time) {
	g.log.Debug("tunnel", zap.String("kind", kind), zap.String("pool", u.sp.pool), zap.String("proxy_id", u.proxy.ID),
		zap.String("lease_id", u.lease.ID), zap.String("target", target), zap.Int64("bytes_up", c.up),
		zap.Int64("bytes_down", c.down), zap.Duration("took", time.Since(start)))
}

// specKey carries a forwarded request's *forward in its context.
type specKey struct{}

type forward struct {
	sp       *spec
	start    time.Time
	answered bool // counted in the metrics (ReverseProxy may report an error after a response)
}

// answered counts the request once, as answered with gerr (nil: ok).
func (f *forward) answer(m *metrics, gerr *Error) {
	if !f.answered {
		f.answered = true
		m.answered(KindHTTP, f.start, gerr)
	}
}

// reverseProxy forwards absolute-URI requests: httputil.ReverseProxy does
// the HTTP (hop-by-hop headers, including the client's
// Proxy-Authorization, streaming, trailers), the transport leases and
// dials.
func (g *Gateway) reverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:    func(*httputil.ProxyRequest) {}, // the request carries its absolute URL; no X-Forwarded-*
		Transport:  transport{g},
		BufferPool: &g.bufs,
		ErrorLog:   g.stdLog(),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var gerr *Error
			if !errors.As(err, &gerr) {
				gerr = &Error{Status: http.StatusBadGateway, Code: "upstream_failed", Message: err.Error()}
			}
			f, ok := r.Context().Value(specKey{}).(*forward)
			if ok {
				f.answer(g.metrics, gerr)
			}
			gerr.write(w)
			if ok {
				g.logRefused(KindHTTP, f.sp, r.URL.Host, gerr, f.start)
			}
		},
	}
}

// transport sends one forwarded request through a leased proxy: to an http
// proxy as an absolute-URI request with the proxy's own credentials, to
// the others through a tunnel to the target. The upstream connection
// carries this one request (Connection: close) and the lease is released
// once it is closed.
type transport struct{ g *Gateway }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	g := t.g
	f := req.Context().Value(specKey{}).(*forward)
	target := req.URL.Host
	if req.URL.Port() == "" {
		target = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody {
		req.Body = &countedBody{ReadCloser: req.Body, n: g.metrics.toUp}
	}
	var (
		conn net.Conn
		resp *http.Response
		stop func() bool
	)
	u, gerr := g.obtain(req.Context(), f.sp, func(ctx context.Context, u *use) error {
		req.Header.Del("Proxy-Authorization")
		if u.tr != nil {
			rs, err := t.viaSession(u, req, hasBody)
			resp = rs
			return err
		}
		req.Close = true // the connection carries this request only
		up := proxydial.FromProxy(u.proxy)
		dctx, cancel := context.WithTimeout(ctx, g.dialTimeout)
		var c net.Conn
		var err error
		if u.proxy.Protocol == model.ProtocolHTTP {
			c, err = g.dialer.DialProxy(dctx, up)
		} else {
			c, err = g.dialer.Tunnel(dctx, up, target)
		}
		cancel()
		if err != nil {
			return err
		}
		// The client going away aborts the exchange, also while the body
		// streams (stopped when the body is closed).
		s := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
		fail := func(err error) error {
			s()
			_ = c.Close()
			if hasBody {
				return noRetry{err}
			}
			return err
		}
		if u.proxy.Protocol == model.ProtocolHTTP {
			if auth := proxydial.BasicAuth(u.proxy.Credentials); auth != "" {
				req.Header.Set("Proxy-Authorization", auth)
			}
			err = req.WriteProxy(c)
		} else {
			err = req.Write(c)
		}
		if err != nil {
			return fail(fmt.Errorf("sending the request upstream: %w", err))
		}
		rs, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return fail(fmt.Errorf("reading the upstream answer: %w", err))
		}
		if err := refusedCredentials(u, rs); err != nil {
			return fail(err)
		}
		conn, resp, stop = c, rs, s
		return nil
	})
	if gerr != nil {
		return nil, gerr
	}
	f.answer(g.metrics, nil)
	if conn != nil {
		u.setLost(func() { _ = conn.Close() })
	}
	resp.Header.Set(HeaderLeaseID, u.lease.ID)
	resp.Header.Set(HeaderProxyID, u.proxy.ID)
	resp.Body = &upstreamBody{ReadCloser: resp.Body, g: g, u: u, conn: conn, stop: stop, f: f,
		status: resp.StatusCode, target: target, eof: resp.Body == http.NoBody}
	return resp, nil
}

// viaSession sends a request over its session's kept-alive connections.
func (t transport) viaSession(u *use, req *http.Request, hasBody bool) (*http.Response, error) {
	req.Close = false
	var rs *http.Response
	var err error
	if fastPath(req, hasBody) {
		rs, err = u.conns.roundTrip(req)
	} else {
		rs, err = u.tr.RoundTrip(req)
	}
	if err != nil {
		if hasBody {
			return nil, noRetry{err}
		}
		return nil, err
	}
	if err := refusedCredentials(u, rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// refusedCredentials is the error of an http upstream that answered 407 to
// its own credentials (its body closed): the proxy's failure, not an answer
// for the client. Nil for any other answer.
func refusedCredentials(u *use, rs *http.Response) error {
	if rs.StatusCode == http.StatusProxyAuthRequired && u.proxy.Protocol == model.ProtocolHTTP {
		_ = rs.Body.Close()
		return errors.New("the upstream proxy refused its credentials: 407 Proxy Authentication Required")
	}
	return nil
}

// upstreamBody is a forwarded response's body; closing it ends the lease's
// use. A request's own upstream connection is closed and its lease
// released in the background, once the client has its answer.
type upstreamBody struct {
	io.ReadCloser
	g      *Gateway
	u      *use
	conn   net.Conn
	stop   func() bool
	f      *forward
	status int
	target string
	n      int64
	eof    bool
	rerr   error
	once   sync.Once
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.rerr = err
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	b.once.Do(func() {
		clientGone := b.stop != nil && !b.stop()
		_ = b.ReadCloser.Close()
		b.g.metrics.toClient.Add(float64(b.n))
		outcome, reason := OutcomeSuccess, ""
		switch {
		case clientGone:
			outcome = OutcomeNone
		case b.rerr != nil:
			outcome, reason = OutcomeFailure, "reading the upstream answer: "+b.rerr.Error()
		case b.g.failOnBlock && (b.status == http.StatusForbidden || b.status == http.StatusTooManyRequests):
			outcome, reason = OutcomeFailure, fmt.Sprintf("the target answered %d (blocked)", b.status)
		case !b.eof:
			outcome = OutcomeNone // the client stopped reading
		}
		// Checked first: the fields would be built, and escape to the heap,
		// on every request even with debug off.
		if ce := b.g.log.Check(zap.DebugLevel, "request"); ce != nil {
			ce.Write(zap.String("kind", KindHTTP), zap.String("pool", b.u.sp.pool),
				zap.String("proxy_id", b.u.proxy.ID), zap.String("lease_id", b.u.lease.ID), zap.String("target", b.target),
				zap.Int("status", b.status), zap.Int64("bytes", b.n), zap.Duration("took", time.Since(b.f.start)))
		}
		if b.conn == nil { // a session's: its transport keeps the connection
			b.u.end(outcome, reason)
			return
		}
		conn, eof, u := b.conn, b.eof, b.u
		b.g.background(func() {
			if eof {
				lingerClose(conn, b.g.closeWait, 0)
			} else {
				_ = conn.Close()
			}
			u.end(outcome, reason)
		})
	})
	return nil
}

// countedBody counts a forwarded request's body as it is sent upstream.
type countedBody struct {
	io.ReadCloser
	n prometheus.Counter
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.n.Add(float64(n))
	}
	return n, err
}
