package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

// TestCurl drives the gateway with curl -x as a user would: plain HTTP,
// CONNECT, SOCKS5 (socks5h://), a session name holding a comma (curl
// decodes the proxy userinfo once, so %2C is written %252C), and a wrong
// token.
func TestCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	require.NoError(t, err, "curl is needed (it is on the development machines and CI)")
	e, tg, w := envWithGateway(t)
	px := proxytest.SOCKS5(t, "bot", "s3cret")
	e.pool("curl", 0, up(model.ProtocolSOCKS5, px, "bot", "s3cret"))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tg.https.Certificate().Raw}), 0o600))

	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, curl, append([]string{"-sS", "--noproxy", "", "--cacert", ca}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no proxy variables from the environment
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "curl %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	proxyURL := "http://pool=curl,session=a%252Cb:" + token + "@" + w.httpAddr
	out := run("-D", "-", "-x", proxyURL, tg.http.URL+"/ok?n=1")
	require.Contains(t, out, "ok 1")
	lease := regexp.MustCompile(`(?i)X-Pharox-Lease-Id: (\S+)`).FindStringSubmatch(out)
	require.NotNil(t, lease, out)

	// The same session, named a,b by a Go client: the same lease.
	_, _, hdr := get(t, w.httpClient("pool=curl,session=a%2Cb", token, false, tg), tg.http.URL+"/ok")
	require.Equal(t, lease[1], hdr.Get(gateway.HeaderLeaseID))

	require.Equal(t, "ok 2", run("-x", "http://pool=curl:"+token+"@"+w.httpAddr, tg.https.URL+"/ok?n=2"))
	require.Equal(t, "ok 3", run("-x", "socks5h://pool=curl:"+token+"@"+w.socksAddr, tg.http.URL+"/ok?n=3"))
	require.Equal(t, "407", run("-o", "/dev/null", "-w", "%{http_code}", "-x", "http://pool=curl:wrong@"+w.httpAddr, tg.http.URL+"/ok"))
	require.EqualValues(t, 3, px.Requests.Load(), "the session's two requests share a kept-alive tunnel; CONNECT and SOCKS5 have one each")
}

// TestHTTPSProxy: the HTTP proxy served over TLS, so the token does not
// cross the network in clear.
func TestHTTPSProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	tg := startTargets(t)
	px := e.httpPool("tls", 0)
	cert, pool := selfSigned(t)
	ts, err := gateway.ParseTokens(strings.NewReader(token))
	require.NoError(t, err)
	g, err := gateway.New(gateway.NewClientLeaser(client.New(natstest.Connect(t, e.srv))), gateway.WithTokens(ts))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		_ = g.ServeHTTPProxy(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}()
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })

	roots := tg.tls.RootCAs.Clone()
	roots.AppendCertsFromPEM(pool)
	pu := &url.URL{Scheme: "https", Host: ln.Addr().String(), User: url.UserPassword("pool=tls", token)}
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}}
	for _, target := range []string{tg.http.URL + "/ok?n=1", tg.https.URL + "/ok?n=2"} {
		code, body, _ := get(t, hc, target)
		require.Equal(t, http.StatusOK, code, body)
	}
	require.EqualValues(t, 2, px.Requests.Load())
}

// TestNoTokensLoopbackOnly: without tokens the gateway serves loopback
// only, and asks no credentials there.
func TestNoTokensLoopbackOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	tg := startTargets(t)
	e.httpPool("open", 0)
	g, err := gateway.New(gateway.NewClientLeaser(client.New(natstest.Connect(t, e.srv))), gateway.WithPool("open"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	wild, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	defer wild.Close()
	require.ErrorIs(t, g.ServeHTTPProxy(wild), gateway.ErrNoTokens)
	require.ErrorIs(t, g.ServeSOCKS5(wild), gateway.ErrNoTokens)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = g.ServeHTTPProxy(ln) }()
	pu := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	code, body, _ := get(t, &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}, tg.http.URL+"/ok?n=7")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok 7", body)
}

// selfSigned makes a certificate for 127.0.0.1 and returns it with its PEM.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pharox gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
