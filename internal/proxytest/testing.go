package proxytest

import "testing"

// HTTP starts an HTTP proxy for t, closed when t ends.
func HTTP(t testing.TB, cfg HTTPConfig) *Proxy { return must(t)(StartHTTP(cfg)) }

// SOCKS5 starts a SOCKS5 proxy for t, closed when t ends.
func SOCKS5(t testing.TB, user, pass string) *Proxy { return must(t)(StartSOCKS5(user, pass)) }

// SOCKS4 starts a SOCKS4 proxy for t, closed when t ends.
func SOCKS4(t testing.TB, userID string) *Proxy { return must(t)(StartSOCKS4(userID)) }

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
