// Package proxydial opens connections through an upstream proxy in the
// proxy's own protocol: HTTP CONNECT (protocols http and https), SOCKS5
// with username/password (golang.org/x/net/proxy) and SOCKS4/4a. The health
// checker probes proxies with it and the gateway forwards its clients'
// traffic with it.
//
// Every connection it returns is the one its forward dialer opened to the
// proxy (a *net.TCPConn for TCP), with the handshake done and nothing left
// buffered, so that io.Copy between it and another TCP connection can use
// splice(2) on Linux.
package proxydial

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// Upstream is a proxy to go through.
type Upstream struct {
	Protocol    model.Protocol
	Addr        string // host:port
	Credentials *model.Credentials
}

// FromProxy is the Upstream of a contract Proxy.
func FromProxy(px model.Proxy) Upstream {
	return Upstream{Protocol: px.Protocol, Addr: net.JoinHostPort(px.Host, strconv.Itoa(px.Port)), Credentials: px.Credentials}
}

// Dialer dials proxies with Forward (a zero net.Dialer when nil).
type Dialer struct {
	Forward *net.Dialer
}

func (d *Dialer) forward() *net.Dialer {
	if d.Forward == nil {
		return &net.Dialer{}
	}
	return d.Forward
}

// DialProxy opens a plain TCP connection to the proxy itself, for speaking
// to an HTTP proxy as a forward proxy (absolute-URI requests).
func (d *Dialer) DialProxy(ctx context.Context, up Upstream) (net.Conn, error) {
	conn, err := d.forward().DialContext(ctx, "tcp", up.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxyconnect tcp: %w", err)
	}
	return conn, nil
}

// Tunnel opens a connection to addr (host:port) through up: a CONNECT
// tunnel for http and https proxies (an https proxy is a CONNECT proxy, as
// proxy lists mean it; the connection to it is plain TCP), SOCKS5 CONNECT
// with user/password when up has credentials, SOCKS4 CONNECT (SOCKS4a for a
// host name; the credentials' user is the user id). ctx bounds the dial and
// the handshake.
func (d *Dialer) Tunnel(ctx context.Context, up Upstream, addr string) (net.Conn, error) {
	switch up.Protocol {
	case model.ProtocolHTTP, model.ProtocolHTTPS:
		return d.connect(ctx, up, addr)
	case model.ProtocolSOCKS5:
		return d.socks5(ctx, up, addr)
	case model.ProtocolSOCKS4:
		return d.socks4(ctx, up, addr)
	}
	return nil, fmt.Errorf("protocol %q cannot be tunnelled through", up.Protocol)
}

// ContextDialer returns Tunnel as a DialContext function for
// http.Transport.
func (d *Dialer) ContextDialer(up Upstream) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) { return d.Tunnel(ctx, up, addr) }
}

// BasicAuth is the Proxy-Authorization value for c ("" for none).
func BasicAuth(c *model.Credentials) string {
	if c == nil {
		return ""
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.User+":"+c.Password))
}

// guardHandshake aborts conn's handshake when ctx ends (by expiring its
// deadline) and returns stop, which disarms that as context.AfterFunc's
// stop does, and fail, which ends a failed handshake: it closes conn and
// reports ctx's end, named by prefix, over err when ctx is what broke it.
func guardHandshake(ctx context.Context, conn net.Conn, prefix string) (stop func() bool, fail func(error) (net.Conn, error)) {
	stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail = func(err error) (net.Conn, error) {
		stop()
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", prefix, ctx.Err())
		}
		return nil, err
	}
	return stop, fail
}
