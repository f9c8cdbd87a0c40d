package proxydial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// SOCKS4 reply codes.
const (
	socks4Granted        = 90
	socks4Rejected       = 91
	socks4NoIdentd       = 92
	socks4IdentdMismatch = 93
)

// socks4 opens a connection through a SOCKS4 proxy (CONNECT command),
// using SOCKS4a for host names so that the proxy resolves them, as the
// SOCKS5 client does. The credentials' user is the SOCKS4 user id (SOCKS4
// has no password).
//
// It is written here, on net.Dialer, because no maintained Go SOCKS4 client
// could be had: golang.org/x/net/proxy speaks only SOCKS5, and the SOCKS4
// libraries looked for (h12.io/socks, github.com/wzshiming/socks4) are not
// served by the Go module proxy this project builds from. The protocol is
// one 9+ byte request and one 8-byte reply.
func (d *Dialer) socks4(ctx context.Context, up Upstream, addr string) (net.Conn, error) {
	userID := ""
	if up.Credentials != nil {
		userID = up.Credentials.User
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("socks4: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("socks4: bad port %q", portStr)
	}
	req := []byte{4, 1, byte(port >> 8), byte(port)}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.To4() != nil:
		req = append(req, ip.To4()...)
		req = append(append(req, userID...), 0)
	case ip != nil:
		return nil, fmt.Errorf("socks4: cannot reach IPv6 address %s", host)
	default: // SOCKS4a: 0.0.0.x, then the host name after the user id.
		req = append(req, 0, 0, 0, 1)
		req = append(append(req, userID...), 0)
		req = append(append(req, host...), 0)
	}
	conn, err := d.forward().DialContext(ctx, "tcp", up.Addr)
	if err != nil {
		return nil, fmt.Errorf("socks4 connect: %w", err)
	}
	stop, fail := guardHandshake(ctx, conn, "socks4")
	if _, err := conn.Write(req); err != nil {
		return fail(fmt.Errorf("socks4: sending the request: %w", err))
	}
	var reply [8]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return fail(fmt.Errorf("socks4: reading the reply: %w", err))
	}
	if reply[0] != 0 {
		return fail(fmt.Errorf("socks4: reply version %d, not 0: is this a SOCKS4 proxy?", reply[0]))
	}
	switch reply[1] {
	case socks4Granted:
	case socks4Rejected:
		return fail(errors.New("socks4: request rejected or failed (91)"))
	case socks4NoIdentd:
		return fail(errors.New("socks4: rejected, the proxy could not reach identd on the client (92)"))
	case socks4IdentdMismatch:
		return fail(errors.New("socks4: rejected, the user id does not match identd's (93)"))
	default:
		return fail(fmt.Errorf("socks4: unknown reply code %d", reply[1]))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	return conn, nil
}
