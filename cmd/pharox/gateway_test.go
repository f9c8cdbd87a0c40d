package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestGatewayUsage: settings that cannot work are refused at start with a
// message saying what to change (exit 2).
func TestGatewayUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	empty := filepath.Join(t.TempDir(), "tokens.txt")
	require.NoError(t, os.WriteFile(empty, []byte("# nobody yet\n"), 0o600))
	for _, c := range []struct {
		env  map[string]string
		args []string
		msg  string
	}{
		{nil, []string{"--listen", "0.0.0.0:8080"}, "no client token is configured: give --token-file"},
		{map[string]string{"PHAROX_GATEWAY_SOCKS_LISTEN": ":1080"}, nil, "no client token is configured"},
		{nil, []string{"--retries", "-1"}, "--retries must be 0..10"},
		{map[string]string{"PHAROX_GATEWAY_LEASE_SECONDS": "x"}, nil, "PHAROX_GATEWAY_LEASE_SECONDS"},
		{nil, []string{"--token-file", empty}, "holds no token"},
		{nil, []string{"--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file"},
		{map[string]string{"PHAROX_GATEWAY_TOKENS": "t consumer=no/slash"}, nil, "PHAROX_GATEWAY_TOKENS"},
		{nil, []string{"--tls-key", "k.pem"}, "--tls-cert and --tls-key go together"},
		{nil, []string{"extra"}, "takes no arguments"},
	} {
		r := h.runEnv(c.env, append([]string{"gateway"}, c.args...)...)
		require.Equal(t, exitUsage, r.code, "%v %v\n%s", c.env, c.args, r)
		require.Contains(t, r.stderr, c.msg)
	}
}

// TestGatewayBinary runs `pharox gateway` as clients in other languages
// rely on: it logs one line when it listens, proxies with a token from the
// token file, and on SIGTERM releases what it holds and exits 0.
func TestGatewayBinary(t *testing.T) {
	t.Parallel()
	pharox, _ := binaries(t)
	h := newHarness(t)
	proxyAddr := standInProxy(t)
	h.pool("gw", "http://"+proxyAddr)
	tokens := filepath.Join(t.TempDir(), "tokens.txt")
	require.NoError(t, os.WriteFile(tokens, []byte("s3cret-token pools=gw\n"), 0o600))

	cmd := exec.Command(pharox, "gateway", "--listen", "127.0.0.1:0", "--token-file", tokens, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "PHAROX_NATS_URL="+h.url, "PHAROX_GATEWAY_SOCKS_LISTEN=127.0.0.1:0", "PHAROX_GATEWAY_DRAIN_TIMEOUT=2s")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan map[string]any, 100)
	var raw strings.Builder
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			raw.WriteString(sc.Text() + "\n")
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
	}()
	next := func(msg string) map[string]any {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-lines:
				require.True(t, ok, "pharox gateway exited before logging %q", msg)
				if m["msg"] == msg {
					return m
				}
			case <-timeout:
				t.Fatalf("no %q line in 20s", msg)
			}
		}
	}
	listening := next("pharox gateway listening")
	require.EqualValues(t, 1, listening["tokens"])
	require.NotEmpty(t, listening["socks5"])

	pu := &url.URL{Scheme: "http", Host: listening["http"].(string), User: url.UserPassword("pool=gw,consumer=cli", "s3cret-token")}
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	resp, err := hc.Get("http://example.invalid/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Equal(t, "hello from the stand-in proxy\n", string(body))
	req := next("request")
	require.Equal(t, "gw", req["pool"])
	require.EqualValues(t, 200, req["status"])
	leaseID := resp.Header.Get("X-Pharox-Lease-Id")
	require.Equal(t, "cli", h.lease(leaseID).ConsumerName)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	next("gateway stopped")
	require.NoError(t, cmd.Wait())
	require.Equal(t, model.LeaseReleased, h.lease(leaseID).Status, "released before the gateway exited")
	st, err := h.c.Stats(h.ctx(), "gw")
	require.NoError(t, err)
	require.Zero(t, st.TotalLeases)
	for range lines {
	}
	require.NotContains(t, raw.String(), "s3cret-token", "tokens are never logged")
}
