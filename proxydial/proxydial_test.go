package proxydial_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

func up(p model.Protocol, px *proxytest.Proxy, user, pass string) proxydial.Upstream {
	u := proxydial.Upstream{Protocol: p, Addr: px.Addr()}
	if user != "" {
		u.Credentials = &model.Credentials{User: user, Password: pass}
	}
	return u
}

// TestTunnelKeepsTheTCPConn: every protocol hands back the *net.TCPConn it
// dialled (so io.Copy can splice), with the handshake done and the tunnel
// carrying bytes both ways.
func TestTunnelKeepsTheTCPConn(t *testing.T) {
	t.Parallel()
	target := proxytest.Echo(t)
	_, port, _ := net.SplitHostPort(target)
	httpPx := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "s3cret"})
	s5 := proxytest.SOCKS5(t, "bot", "s3cret")
	s4 := proxytest.SOCKS4(t, "bot")
	d := &proxydial.Dialer{}
	cases := []struct {
		name string
		up   proxydial.Upstream
		addr string
	}{
		{"http CONNECT", up(model.ProtocolHTTP, httpPx, "bot", "s3cret"), target},
		{"https (CONNECT)", up(model.ProtocolHTTPS, httpPx, "bot", "s3cret"), target},
		{"socks5", up(model.ProtocolSOCKS5, s5, "bot", "s3cret"), target},
		{"socks4", up(model.ProtocolSOCKS4, s4, "bot", ""), target},
		{"socks4a host name", up(model.ProtocolSOCKS4, s4, "bot", ""), net.JoinHostPort("localhost", port)},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := d.Tunnel(ctx, c.up, c.addr)
		cancel()
		require.NoError(t, err, c.name)
		_, ok := conn.(*net.TCPConn)
		require.True(t, ok, "%s: got a %T", c.name, conn)
		_, err = conn.Write([]byte("hello " + c.name + "\n"))
		require.NoError(t, err)
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "hello "+c.name+"\n", line)
		require.NoError(t, conn.Close())
	}
	require.EqualValues(t, 2, httpPx.Requests.Load())
}

func TestTunnelFailures(t *testing.T) {
	t.Parallel()
	target := proxytest.Echo(t)
	httpPx := proxytest.HTTP(t, proxytest.HTTPConfig{User: "bot", Password: "right"})
	s5 := proxytest.SOCKS5(t, "bot", "right")
	s4 := proxytest.SOCKS4(t, "bot")
	d := &proxydial.Dialer{}
	ctx := context.Background()

	_, err := d.Tunnel(ctx, up(model.ProtocolHTTP, httpPx, "bot", "wrong"), target)
	require.ErrorContains(t, err, "407 Proxy Authentication Required")
	_, err = d.Tunnel(ctx, up(model.ProtocolSOCKS5, s5, "bot", "wrong"), target)
	require.ErrorContains(t, err, "username/password authentication failed")
	_, err = d.Tunnel(ctx, up(model.ProtocolSOCKS4, s4, "mallory", ""), target)
	require.ErrorContains(t, err, "rejected")
	_, err = d.Tunnel(ctx, proxydial.Upstream{Protocol: "ftp", Addr: httpPx.Addr()}, target)
	require.ErrorContains(t, err, `protocol "ftp"`)

	// A proxy that accepts and never answers: ctx ends the handshake.
	silent := proxydial.Upstream{Addr: proxytest.Silent(t).Addr()}
	for _, p := range []model.Protocol{model.ProtocolHTTP, model.ProtocolSOCKS5, model.ProtocolSOCKS4} {
		silent.Protocol = p
		tctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		start := time.Now()
		_, err := d.Tunnel(tctx, silent, target)
		cancel()
		require.Error(t, err, p)
		// ctx's deadline, or the same deadline set on the connection.
		timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
		require.True(t, timedOut, "%s: %v", p, err)
		require.Less(t, time.Since(start), 3*time.Second)
	}

	// Nothing listening.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := free.Addr().(*net.TCPAddr).Port
	_ = free.Close()
	_, err = d.DialProxy(ctx, proxydial.Upstream{Protocol: model.ProtocolHTTP, Addr: "127.0.0.1:" + strconv.Itoa(closed)})
	require.ErrorContains(t, err, "refused")
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	require.Equal(t, "", proxydial.BasicAuth(nil))
	require.Equal(t, "Basic Ym90OnMzOmNyZXQ=", proxydial.BasicAuth(&model.Credentials{User: "bot", Password: "s3:cret"}))
}
