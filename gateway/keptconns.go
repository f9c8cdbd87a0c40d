package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

// keptConns forwards a session's replayable requests without a body (GET,
// HEAD, OPTIONS, TRACE) over kept-alive connections to its proxy, writing
// each request and reading its answer on the request's own goroutine.
// http.Transport hands every request to a writer goroutine and its answer
// back from a reader goroutine: on a kept-alive connection those hand-offs
// cost the gateway about as much as the I/O itself. Requests with a body
// stay with the session's http.Transport, which streams the body while it
// reads the answer; so do upgrades.
//
// It keeps what the transport did for these requests: an http proxy gets
// absolute-URI requests with its own credentials, the others a tunnel per
// target; at most maxIdlePerTarget idle connections per target, each closed
// after sessionIdle unused; 1xx answers go to the client trace (which
// ReverseProxy forwards); a request on a kept connection that the proxy
// had closed meanwhile is sent again on a new one.
type keptConns struct {
	g    *Gateway
	up   proxydial.Upstream
	auth string // Proxy-Authorization of an http proxy; "" for none

	mu     sync.Mutex
	idle   map[string][]*keptConn // by target; "" for an http proxy, whose connections serve every target
	closed bool
}

// maxIdlePerTarget bounds a session's idle connections to one target (or
// to its http proxy), as MaxIdleConnsPerHost did.
const maxIdlePerTarget = 16

// maxAnswerHeaderBytes bounds an upstream answer's headers, as
// http.Transport's default MaxResponseHeaderBytes does.
const maxAnswerHeaderBytes = 10 << 20

func (g *Gateway) keptConns(px model.Proxy) *keptConns {
	kc := &keptConns{g: g, up: proxydial.FromProxy(px), idle: map[string][]*keptConn{}}
	if px.Protocol == model.ProtocolHTTP {
		kc.auth = proxydial.BasicAuth(px.Credentials)
	}
	return kc
}

// fastPath reports whether req goes through keptConns: replayable, so that
// a connection found closed can be tried again, with no body to stream and
// no upgrade.
func fastPath(req *http.Request, hasBody bool) bool {
	if hasBody || req.Header["Upgrade"] != nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// keptConn is one connection to the proxy (or tunnel through it).
type keptConn struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	key  string
	// read counts the bytes read from conn; left is how many more it may
	// read (the bound on an answer's headers).
	read, left int64
	// idle (under keptConns.mu) is whether it is in the idle list; timer
	// closes it once idle for sessionIdle.
	idle  bool
	timer *time.Timer
}

func (c *keptConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", maxAnswerHeaderBytes)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.conn.Read(p)
	c.read += int64(n)
	c.left -= int64(n)
	return n, err
}

// errStale is an exchange on a kept connection that got nothing back: the
// proxy had closed it.
type errStale struct{ error }

func (e errStale) Unwrap() error { return e.error }

// roundTrip sends req (see fastPath) and returns its answer, whose body
// gives the connection back once read to its end and closed.
func (kc *keptConns) roundTrip(req *http.Request) (*http.Response, error) {
	key := ""
	if kc.up.Protocol != model.ProtocolHTTP {
		key = req.URL.Host
		if req.URL.Port() == "" {
			key = net.JoinHostPort(req.URL.Hostname(), "80")
		}
	}
	if kc.auth != "" {
		req.Header.Set("Proxy-Authorization", kc.auth)
	}
	for {
		c, reused, err := kc.get(req.Context(), key)
		if err != nil {
			return nil, err
		}
		resp, err := kc.exchange(c, req)
		var stale errStale
		if err == nil || !reused || !errors.As(err, &stale) || req.Context().Err() != nil {
			return resp, err
		}
		// Closed while idle: each failed connection is gone, so this ends
		// with a new one at the latest.
	}
}

// get returns an idle connection to key, or dials one.
func (kc *keptConns) get(ctx context.Context, key string) (c *keptConn, reused bool, err error) {
	kc.mu.Lock()
	if list := kc.idle[key]; len(list) > 0 {
		c = list[len(list)-1]
		list[len(list)-1] = nil
		kc.idle[key] = list[:len(list)-1]
		c.idle = false
		kc.mu.Unlock()
		return c, true, nil
	}
	kc.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, kc.g.dialTimeout)
	defer cancel()
	var conn net.Conn
	if kc.up.Protocol == model.ProtocolHTTP {
		conn, err = kc.g.dialer.DialProxy(dctx, kc.up)
		if err != nil {
			// As http.Transport reports a failed dial to its proxy.
			return nil, false, &net.OpError{Op: "proxyconnect", Net: "tcp", Err: err}
		}
	} else if conn, err = kc.g.dialer.Tunnel(dctx, kc.up, key); err != nil {
		return nil, false, err
	}
	c = &keptConn{conn: conn, key: key}
	c.br = bufio.NewReader(c)
	c.bw = bufio.NewWriter(conn)
	return c, false, nil
}

// put gives back a connection whose exchange ended cleanly.
func (kc *keptConns) put(c *keptConn) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed || len(kc.idle[c.key]) >= maxIdlePerTarget {
		_ = c.conn.Close()
		return
	}
	c.idle = true
	kc.idle[c.key] = append(kc.idle[c.key], c)
	if c.timer == nil {
		c.timer = time.AfterFunc(sessionIdle, func() { kc.expire(c) })
	} else {
		c.timer.Reset(sessionIdle)
	}
}

// expire closes c if it is still idle.
func (kc *keptConns) expire(c *keptConn) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if !c.idle {
		return
	}
	list := kc.idle[c.key]
	for i, ic := range list {
		if ic == c {
			kc.idle[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	c.idle = false
	_ = c.conn.Close()
}

// closeIdle closes the idle connections, and those in use as they are
// given back: the session has left this proxy.
func (kc *keptConns) closeIdle() {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.closed = true
	for key, list := range kc.idle {
		for _, c := range list {
			c.idle = false
			if c.timer != nil {
				c.timer.Stop()
			}
			_ = c.conn.Close()
		}
		delete(kc.idle, key)
	}
}

// exchange writes req on c and reads its answer; the client going away
// aborts it, also while the body is read.
func (kc *keptConns) exchange(c *keptConn, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = c.conn.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	var err error
	if kc.up.Protocol == model.ProtocolHTTP {
		err = req.WriteProxy(c.bw)
	} else {
		err = req.Write(c.bw)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return fail(errStale{err})
	}
	read := c.read - int64(c.br.Buffered())
	c.left = maxAnswerHeaderBytes
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.read-int64(c.br.Buffered()) == read {
				err = errStale{err}
			}
			return fail(err)
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
			c.left = maxAnswerHeaderBytes // the client has that answer
		}
	}
	c.left = math.MaxInt64
	keep := !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.Body == http.NoBody {
		if stop() && keep {
			kc.put(c)
		} else {
			_ = c.conn.Close()
		}
		return resp, nil
	}
	resp.Body = &keptBody{ReadCloser: resp.Body, kc: kc, c: c, ctx: ctx, stop: stop, keep: keep}
	return resp, nil
}

// keptBody is an answer's body on a kept connection: read to its end and
// closed, it gives the connection back; closed before, it closes it.
type keptBody struct {
	io.ReadCloser
	kc   *keptConns
	c    *keptConn
	ctx  context.Context
	stop func() bool
	keep bool
	eof  bool
	done bool
}

func (b *keptBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.ctx.Err() != nil:
		err = context.Cause(b.ctx) // as http.Transport reports it
	}
	return n, err
}

func (b *keptBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if b.stop() && b.eof && b.keep {
		b.kc.put(b.c)
		return nil
	}
	// Not drained: the rest of the answer is not read.
	_ = b.c.conn.Close()
	return nil
}
