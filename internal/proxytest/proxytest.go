// Package proxytest runs upstream proxies on loopback for tests and the
// benchmark: an HTTP proxy (forward and CONNECT), SOCKS5 with optional
// username/password, SOCKS4/4a, and a silent one that never answers. Each
// counts the client connections it holds open, so a test can check that no
// proxy ever saw more at once than the leases on it allowed.
//
// A connection stops counting when the proxy sends its FIN (CloseWrite or
// Close, whichever comes first), which is the earliest moment a client can
// see it end; a client that waits for EOF before letting another client in
// therefore never makes the count exceed its own.
package proxytest

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// Counter counts the connections a proxy holds open.
type Counter struct {
	cur, max, total atomic.Int64
}

// Current is the number of connections open now.
func (c *Counter) Current() int64 { return c.cur.Load() }

// Max is the most connections that were open at once.
func (c *Counter) Max() int64 { return c.max.Load() }

// Total is the number of connections accepted.
func (c *Counter) Total() int64 { return c.total.Load() }

func (c *Counter) open() {
	c.total.Add(1)
	n := c.cur.Add(1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			return
		}
	}
}

// countingListener counts what it accepts.
type countingListener struct {
	net.Listener
	c *Counter
}

func (l countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.c.open()
	return &countedConn{TCPConn: conn.(*net.TCPConn), c: l.c}, nil
}

// countedConn stops counting at its first CloseWrite or Close. It embeds
// the *net.TCPConn so that ReadFrom and WriteTo (splice) stay available.
type countedConn struct {
	*net.TCPConn
	once sync.Once
	c    *Counter
}

func (c *countedConn) done() { c.once.Do(func() { c.c.cur.Add(-1) }) }

func (c *countedConn) CloseWrite() error {
	c.done()
	return c.TCPConn.CloseWrite()
}

func (c *countedConn) Close() error {
	c.done()
	return c.TCPConn.Close()
}

// listen opens a counting listener on 127.0.0.1.
func listen(c *Counter) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return countingListener{Listener: ln, c: c}, nil
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// acceptEach hands every connection ln accepts to handle, each on a
// goroutine of its own, until ln is closed.
func acceptEach(ln net.Listener, handle func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go handle(conn)
	}
}

// StartSilent starts a proxy on 127.0.0.1 that accepts connections and
// never says anything: an upstream whose handshake only a deadline ends.
// Close closes the connections it holds too.
func StartSilent() (*Proxy, error) {
	p := &Proxy{Host: "127.0.0.1"}
	ln, err := listen(&p.Counter)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var held []net.Conn
	closed := false
	go acceptEach(ln, func(conn net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			_ = conn.Close()
			return
		}
		held = append(held, conn)
	})
	p.Port = portOf(ln)
	p.close = func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, conn := range held {
			_ = conn.Close()
		}
	}
	return p, nil
}

// Proxy is a running upstream proxy.
type Proxy struct {
	Counter
	Host string
	Port int
	// Requests counts forwarded requests and opened tunnels.
	Requests atomic.Int64
	// Forwards and Connects split the HTTP proxy's Requests: absolute-URI
	// requests it forwarded and CONNECT tunnels it opened.
	Forwards, Connects atomic.Int64

	close func()
}

// Addr is host:port.
func (p *Proxy) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// Close stops the proxy.
func (p *Proxy) Close() { p.close() }
