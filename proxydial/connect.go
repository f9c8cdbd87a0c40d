package proxydial

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
)

// connect opens a CONNECT tunnel through an HTTP proxy. net/http writes the
// request and reads the proxy's answer.
func (d *Dialer) connect(ctx context.Context, up Upstream, addr string) (net.Conn, error) {
	conn, err := d.forward().DialContext(ctx, "tcp", up.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxyconnect tcp: %w", err)
	}
	stop, fail := guardHandshake(ctx, conn, "proxy CONNECT")
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if auth := BasicAuth(up.Credentials); auth != "" {
		req.Header.Set("Proxy-Authorization", auth)
	}
	if err := req.Write(conn); err != nil {
		return fail(fmt.Errorf("proxy CONNECT: %w", err))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(fmt.Errorf("proxy CONNECT: reading the answer: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return fail(fmt.Errorf("proxy refused CONNECT: %s", resp.Status))
	}
	if br.Buffered() > 0 {
		return fail(errors.New("proxy CONNECT: the proxy sent data before the tunnel was used"))
	}
	if !stop() {
		return fail(ctx.Err())
	}
	return conn, nil
}
