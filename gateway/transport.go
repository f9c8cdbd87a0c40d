package gateway

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

// sessionIdle is how long a session's idle connection to its proxy stays
// open.
const sessionIdle = 30 * time.Second

// sessionTransport forwards plain HTTP requests through px with keep-alive:
// to an http proxy as absolute-URI requests with its credentials, to the
// others through tunnels to each target. It passes bodies and
// Accept-Encoding through as they are.
func (g *Gateway) sessionTransport(px model.Proxy) *http.Transport {
	up := proxydial.FromProxy(px)
	tr := &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     sessionIdle,
	}
	if px.Protocol == model.ProtocolHTTP {
		pu := &url.URL{Scheme: "http", Host: up.Addr}
		if c := px.Credentials; c != nil {
			pu.User = url.UserPassword(c.User, c.Password)
		}
		tr.Proxy = http.ProxyURL(pu)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, g.dialTimeout)
			defer cancel()
			return g.dialer.DialProxy(ctx, up)
		}
		return tr
	}
	tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, g.dialTimeout)
		defer cancel()
		return g.dialer.Tunnel(ctx, up, addr)
	}
	return tr
}
