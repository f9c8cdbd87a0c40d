package proxytest

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// HTTP starts an HTTP proxy for t, closed when t ends.
func HTTP(t testing.TB, cfg HTTPConfig) *Proxy { return must(t)(StartHTTP(cfg)) }

// SOCKS5 starts a SOCKS5 proxy for t, closed when t ends.
func SOCKS5(t testing.TB, user, pass string) *Proxy { return must(t)(StartSOCKS5(user, pass)) }

// SOCKS4 starts a SOCKS4 proxy for t, closed when t ends.
func SOCKS4(t testing.TB, userID string) *Proxy { return must(t)(StartSOCKS4(userID)) }

// Silent starts a silent proxy for t, closed when t ends.
func Silent(t testing.TB) *Proxy { return must(t)(StartSilent()) }

func must(t testing.TB) func(*Proxy, error) *Proxy {
	return func(p *Proxy, err error) *Proxy {
		t.Helper()
		if err != nil {
			t.Fatalf("start proxy: %v", err)
		}
		t.Cleanup(p.Close)
		return p
	}
}

// Echo starts a target for t on 127.0.0.1 that answers each line with the
// same line, closed when t ends, and returns its host:port: what a test
// tunnels to through a proxy to see bytes cross both ways.
func Echo(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start echo: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go acceptEach(ln, echoLines)
	return ln.Addr().String()
}

func echoLines(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}
