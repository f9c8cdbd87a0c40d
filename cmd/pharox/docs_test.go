package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
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
)

// docFile is the documentation whose examples these tests run.
const docFile = "../../README.md"

// docBlocks returns the code blocks of docFile preceded by the line
// "<!-- tested: KIND -->", in order.
func docBlocks(t *testing.T, kind string) []string {
	t.Helper()
	f, err := os.Open(docFile)
	require.NoError(t, err)
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	marked, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inBlock && strings.HasPrefix(line, "```"):
			inBlock = false
			if cur != nil {
				blocks = append(blocks, cur.String())
				cur = nil
			}
		case inBlock:
			if cur != nil {
				cur.WriteString(line + "\n")
			}
		case strings.HasPrefix(line, "```"):
			inBlock = true
			if marked {
				cur = &strings.Builder{}
			}
			marked = false
		case strings.TrimSpace(line) == "<!-- tested: "+kind+" -->":
			marked = true
		case strings.TrimSpace(line) != "":
			marked = false
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, blocks, "no blocks marked tested: %s in %s", kind, docFile)
	return blocks
}

// standInProxy answers every proxied request itself.
func standInProxy(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello from the stand-in proxy\n"))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestDocsCommandLine runs the documented shell commands, in order, with
// the built pharox on PATH, against a worker; 127.0.0.1:3128 is a stand-in
// proxy.
func TestDocsCommandLine(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	pharox, _ := binaries(t)
	h := newHarness(t)
	proxyAddr := standInProxy(t)
	script := "set -euo pipefail\n" + strings.Join(docBlocks(t, "cli"), "\n")
	script = strings.ReplaceAll(script, "127.0.0.1:3128", proxyAddr)
	gatewayAddr := freeAddr(t)
	script = strings.ReplaceAll(script, "127.0.0.1:8080", gatewayAddr)
	script = strings.ReplaceAll(script, "127.0.0.1:9465", freeAddr(t))

	dir := t.TempDir()
	path := filepath.Dir(pharox) + string(os.PathListSeparator) + os.Getenv("PATH")
	if _, err := exec.LookPath("curl"); err != nil {
		// The doc uses curl; a stand-in prints what the stand-in proxy would.
		t.Log("curl is not installed: using a stand-in")
		shim := filepath.Join(dir, "bin")
		require.NoError(t, os.MkdirAll(shim, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(shim, "curl"), []byte("#!/bin/sh\necho hello from the stand-in proxy\n"), 0o755))
		path = shim + string(os.PathListSeparator) + path
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+path, "PHAROX_NATS_URL="+h.url, "PHAROX_SUBJECT_PREFIX=", "HTTP_PROXY=", "http_proxy=")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("documented commands took %s", time.Since(start))
	out := stdout.String()
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out, stderr.String())

	for _, want := range []string{
		"leased http://" + proxyAddr + " as lease ",
		"hello from the stand-in proxy\nexit status 3\n",
		"proxy          socks5://bot:s3cret@127.0.0.1:1080\n",
		"through http://" + proxyAddr + "\nexit status 4\n",
		`added 2 proxies to pool "scrapers" in 1 batch(es) from 4 line(s); skipped 1, refused 1
line 4: skipped: duplicate of line 2
line 5: refused: port must be in 1..65535, got 99999
exit status 1
`,
		"deleted pool scrapers\n",
		// the gateway: two requests through it, then a wrong token, then
		// its metrics
		"hello from the stand-in proxy\nhello from the stand-in proxy\n407\n" +
			"pharox_gateway_requests_total{kind=\"http\",outcome=\"ok\"} 2\n" +
			"pharox_gateway_requests_total{kind=\"http\",outcome=\"refused\"} 1\n",
		// Feedback and cooldowns.
		"exit status 1\nexit status 3\n",
		"cooling_proxies    1\n",
		"deleted pool crawl\n",
	} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 5, strings.Count(out, "hello from the stand-in proxy"), "curl directly, through pharox run twice, and twice through the gateway")
	require.Regexp(t, `(?m)^\S+Z  cooldown        pool=crawl  proxy=\S+  failures=2  until=\S+Z  reason="sh exited with status 1"$`, out)
	require.Regexp(t, `(?m)^cooldown_until\s+-$`, out)
	require.Regexp(t, `(?m)^\S+Z  acquired        pool=scrapers  consumer=crawler-1  proxy=\S+  lease=\S+  took=\S+\n\S+Z  acquire_failed  pool=scrapers  consumer=default  proxy=-  took=\S+\n\S+Z  renewed         pool=scrapers  consumer=crawler-1 `, out)
	require.Regexp(t, `(?m)^\{"event":"released","subject":"pharox.events.released",.*"payload":\{"lease":\{`, out)
	require.Contains(t, stderr.String(), "importing into scrapers", "the progress bar")
}

// TestDocsGoProgram builds and runs the documented Go program against a
// worker whose pool "scrapers" has an AR proxy (a stand-in).
func TestDocsGoProgram(t *testing.T) {
	t.Parallel()
	file, h, proxyAddr := docProgramWithPool(t, "go", "scrapers")

	out := goRun(t, file, "PHAROX_NATS_URL="+h.url)
	require.Regexp(t, `^200 OK through http://`+regexp.QuoteMeta(proxyAddr)+`: 30 bytes
released crawler-1 after \d+ms; 1 of 1 proxies free
$`, out)

	// The proxy is leased: the program says so, like pharox's None.
	h.ok("acquire", "--pool", "scrapers")
	out = goRun(t, file, "PHAROX_NATS_URL="+h.url)
	require.Equal(t, "no proxy free; try again later\n", out)
}

// docProgram writes the one block of lang in the documentation, a Go
// program, to main.go in a directory of the test's and returns its path.
func docProgram(t *testing.T, lang string) string {
	t.Helper()
	blocks := docBlocks(t, lang)
	require.Len(t, blocks, 1)
	file := filepath.Join(t.TempDir(), "main.go")
	require.NoError(t, os.WriteFile(file, []byte(blocks[0]), 0o600))
	return file
}

// docProgramWithPool is the setting of a documented Go program: its file
// (docProgram), and a worker whose pool has one proxy, a stand-in at
// proxyAddr.
func docProgramWithPool(t *testing.T, lang, pool string) (file string, h *harness, proxyAddr string) {
	t.Helper()
	file = docProgram(t, lang)
	h = newHarness(t)
	proxyAddr = standInProxy(t)
	h.pool(pool, "http://"+proxyAddr)
	return file, h, proxyAddr
}

// goRun runs the Go program file with go run, with env added to the
// test's environment, and returns what it printed; it must exit 0.
func goRun(t *testing.T, file string, env ...string) string {
	t.Helper()
	cmd := exec.Command("go", "run", file)
	cmd.Dir = "../.." // the module, whose go.mod resolves the imports
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestDocsGatewayGo builds and runs the documented Go client of the
// gateway against a gateway in front of a pool "web" whose proxy is a
// stand-in.
func TestDocsGatewayGo(t *testing.T) {
	t.Parallel()
	file, h, _ := docProgramWithPool(t, "go-gateway", "web")
	const token = "docs-token"
	tokens, err := gateway.ParseTokens(strings.NewReader(token + " pools=web"))
	require.NoError(t, err)
	g, err := gateway.New(gateway.NewClientLeaser(client.New(natstest.Connect(t, h.srv))), gateway.WithTokens(tokens))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = g.ServeHTTPProxy(ln) }()
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })

	out := goRun(t, file, "PHAROX_GATEWAY_ADDR="+ln.Addr().String(), "PHAROX_GATEWAY_TOKEN="+token, "HTTP_PROXY=", "http_proxy=")
	m := regexp.MustCompile(`^200 OK via proxy (\S+): hello from the stand-in proxy
200 OK via proxy (\S+): hello from the stand-in proxy
$`).FindStringSubmatch(out)
	require.NotNil(t, m, "%s", out)
	require.Equal(t, m[1], m[2], "one session, one proxy")
}
