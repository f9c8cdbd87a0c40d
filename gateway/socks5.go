package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// The SOCKS5 server side is written here (RFC 1928 CONNECT, RFC 1929
// username/password): its few messages are decided by what the gateway does
// between them (check the token, read the username as a lease request,
// lease, dial the upstream), and the libraries that serve SOCKS5 either
// take the dialling and the connection out of our hands or are not served
// by the module proxy this project builds from.

// SOCKS5 protocol constants.
const (
	socksVersion      = 5
	socksAuthVersion  = 1
	socksNoAuth       = 0x00
	socksUserPass     = 0x02
	socksNoAcceptable = 0xFF
	socksConnect      = 0x01
	socksIPv4         = 0x01
	socksDomain       = 0x03
	socksIPv6         = 0x04
)

// ServeSOCKS5 serves the SOCKS5 proxy on ln until Shutdown, then returns
// ErrClosed.
func (g *Gateway) ServeSOCKS5(ln net.Listener) error {
	if err := g.open(ln, nil); err != nil {
		return err
	}
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			g.mu.Lock()
			closing := g.closing
			g.mu.Unlock()
			if closing {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // e.g. out of file descriptors for a moment
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		t, ok := g.track(func() { _ = conn.Close() })
		if !ok {
			_ = conn.Close()
			continue
		}
		go func() {
			defer g.untrack(t)
			g.serveSOCKS(conn, t)
		}()
	}
}

// serveSOCKS serves one SOCKS5 connection: one CONNECT, one lease.
func (g *Gateway) serveSOCKS(conn net.Conn, t *tunnel) {
	start := time.Now()
	_ = conn.SetDeadline(start.Add(g.headerTimeout))
	user, tok, gerr := g.socksAuth(conn)
	if gerr != nil {
		g.metrics.answered(KindSOCKS5, start, gerr)
		_ = conn.Close()
		return
	}
	target, code, err := readSOCKSRequest(conn)
	if err != nil {
		g.log.Info("SOCKS5 request refused", zap.String("reason", err.Error()))
		if code == 0 {
			g.metrics.answered(KindSOCKS5, start, errClient(err))
			_ = conn.Close()
			return
		}
		socksReply(conn, code)
		g.metrics.answered(KindSOCKS5, start, errBadRequest("bad_socks_request", err))
		// The rest of the request (an address the gateway cannot parse) is
		// unread: closing now would reset the connection, and a reset
		// drops the reply if it is still in flight. A second, 64 KiB at
		// most, is what a client gets to stop sending.
		lingerClose(conn, time.Second, 64<<10)
		return
	}
	sp, gerr := g.resolve(user, tok)
	if gerr != nil {
		g.metrics.answered(KindSOCKS5, start, gerr)
		socksReply(conn, gerr.socksCode())
		g.log.Info("SOCKS5 request refused", zap.String("target", target), zap.String("code", gerr.Code), zap.String("reason", gerr.Message))
		_ = conn.Close()
		return
	}
	// The lease request may wait: the handshake deadline no longer applies.
	_ = conn.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	t.set(func() { cancel(); _ = conn.Close() })
	u, upstream, gerr := g.obtainTunnel(ctx, sp, target)
	cancel()
	if gerr != nil {
		g.metrics.answered(KindSOCKS5, start, gerr)
		socksReply(conn, gerr.socksCode())
		g.log.Info("SOCKS5 request refused", zap.String("pool", sp.pool), zap.String("target", target),
			zap.Int("status", gerr.Status), zap.String("code", gerr.Code), zap.String("reason", gerr.Message))
		_ = conn.Close()
		return
	}
	g.carry(KindSOCKS5, t, u, conn, nil, upstream, target, start, func() error {
		if !socksReply(conn, socksSucceeded) {
			return errors.New("the client went away before the SOCKS5 reply")
		}
		return nil
	})
}

// socksAuth runs the method negotiation and, when chosen, RFC 1929
// username/password: the username is the lease request, the password a
// token. Without tokens, no authentication is also accepted.
//
// A non-nil *Error says why the connection ends: the client's I/O failed,
// it does not speak SOCKS5 or offers no usable method (refused), or its
// token is wrong (refused).
func (g *Gateway) socksAuth(conn net.Conn) (user string, tok *Token, gerr *Error) {
	failed := func(err error) (string, *Token, *Error) { return "", nil, errClient(err) }
	var buf [2 + 255]byte
	if _, err := io.ReadFull(conn, buf[:2]); err != nil {
		return failed(err)
	}
	if buf[0] != socksVersion {
		return "", nil, errBadRequest("not_socks5", fmt.Errorf("SOCKS version %d, not 5", buf[0]))
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(conn, methods); err != nil {
		return failed(err)
	}
	var userPass, noAuth bool
	for _, m := range methods {
		userPass = userPass || m == socksUserPass
		noAuth = noAuth || m == socksNoAuth
	}
	switch {
	case userPass:
	case noAuth && g.tokens.Len() == 0:
		if _, err := conn.Write([]byte{socksVersion, socksNoAuth}); err != nil {
			return failed(err)
		}
		return "", nil, nil
	default:
		_, _ = conn.Write([]byte{socksVersion, socksNoAcceptable})
		g.log.Info("SOCKS5 client refused: it offers no username/password authentication")
		return "", nil, errAuth("no username/password authentication offered")
	}
	if _, err := conn.Write([]byte{socksVersion, socksUserPass}); err != nil {
		return failed(err)
	}
	// VER ULEN UNAME PLEN PASSWD
	if _, err := io.ReadFull(conn, buf[:2]); err != nil {
		return failed(err)
	}
	if buf[0] != socksAuthVersion {
		return "", nil, errBadRequest("not_socks5", fmt.Errorf("username/password version %d, not 1", buf[0]))
	}
	name := make([]byte, buf[1])
	if _, err := io.ReadFull(conn, name); err != nil {
		return failed(err)
	}
	if _, err := io.ReadFull(conn, buf[:1]); err != nil {
		return failed(err)
	}
	pass := buf[1 : 1+int(buf[0])]
	if _, err := io.ReadFull(conn, pass); err != nil {
		return failed(err)
	}
	tok, gerr = g.authenticate(true, string(pass))
	if gerr != nil {
		_, _ = conn.Write([]byte{socksAuthVersion, 1})
		g.log.Info("SOCKS5 client refused", zap.String("reason", gerr.Message))
		return "", nil, gerr
	}
	if _, err := conn.Write([]byte{socksAuthVersion, 0}); err != nil {
		return failed(err)
	}
	return string(name), tok, nil
}

// readSOCKSRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT and returns
// the target as host:port; on error, the reply code to send (0: none).
func readSOCKSRequest(conn net.Conn) (string, byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return "", 0, fmt.Errorf("reading the request: %w", err)
	}
	if head[0] != socksVersion {
		return "", 0, fmt.Errorf("request version %d, not 5", head[0])
	}
	var host string
	switch head[3] {
	case socksIPv4:
		var ip [4]byte
		if _, err := io.ReadFull(conn, ip[:]); err != nil {
			return "", 0, err
		}
		host = net.IP(ip[:]).String()
	case socksIPv6:
		var ip [16]byte
		if _, err := io.ReadFull(conn, ip[:]); err != nil {
			return "", 0, err
		}
		host = net.IP(ip[:]).String()
	case socksDomain:
		var n [1]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			return "", 0, err
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(conn, name); err != nil {
			return "", 0, err
		}
		host = string(name)
	default:
		return "", socksAddressUnsupported, fmt.Errorf("address type %d is not supported", head[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(conn, port[:]); err != nil {
		return "", 0, err
	}
	if head[1] != socksConnect {
		return "", socksCommandUnsupported, fmt.Errorf("command %d is not supported (CONNECT only)", head[1])
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), 0, nil
}

// socksReply sends a reply with an unspecified bound address.
func socksReply(conn net.Conn, code byte) bool {
	_, err := conn.Write([]byte{socksVersion, code, 0, socksIPv4, 0, 0, 0, 0, 0, 0})
	return err == nil
}
