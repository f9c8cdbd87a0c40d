package proxydial

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/proxy"
)

// connWithHandshake is what golang.org/x/net/proxy's SOCKS5 dialer can do
// besides dialling: run the handshake on a connection already open. Using it
// keeps the connection we opened (its DialContext would wrap it in a type
// that hides the *net.TCPConn, and with it splice).
type connWithHandshake interface {
	DialWithConn(ctx context.Context, c net.Conn, network, address string) (net.Addr, error)
}

// socks5 opens a connection through a SOCKS5 proxy (RFC 1928) with
// username/password authentication (RFC 1929) when up has credentials; host
// names are resolved by the proxy.
func (d *Dialer) socks5(ctx context.Context, up Upstream, addr string) (net.Conn, error) {
	var auth *proxy.Auth
	if c := up.Credentials; c != nil {
		auth = &proxy.Auth{User: c.User, Password: c.Password}
	}
	pd, err := proxy.SOCKS5("tcp", up.Addr, auth, nil)
	if err != nil {
		return nil, fmt.Errorf("socks5 dialer: %w", err)
	}
	hs, ok := pd.(connWithHandshake)
	if !ok {
		return nil, errors.New("socks5 dialer cannot hand-shake on a connection of ours")
	}
	conn, err := d.forward().DialContext(ctx, "tcp", up.Addr)
	if err != nil {
		return nil, fmt.Errorf("socks5 connect tcp: %w", err)
	}
	if _, err := hs.DialWithConn(ctx, conn, "tcp", addr); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("socks5: %w", err)
	}
	return conn, nil
}
