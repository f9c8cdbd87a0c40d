package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// binDir holds the binaries built for the tests (pharox, printenv).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pharox-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binaries builds ./cmd/pharox and the printenv helper once per test run and
// returns their paths.
func binaries(t *testing.T) (pharox, printenv string) {
	t.Helper()
	buildOnce.Do(func() {
		for _, b := range []struct{ out, pkg string }{{"pharox", "."}, {"printenv", "./testdata/printenv"}} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return filepath.Join(binDir, "pharox"), filepath.Join(binDir, "printenv")
}

// harness is an embedded NATS server with a real worker, and a client for
// checking what the commands did.
type harness struct {
	t   *testing.T
	srv *server.Server
	url string
	c   *client.Client
	w   *workertest.Worker
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	return newHarnessWith(t, workertest.Config{})
}

func newHarnessWith(t *testing.T, cfg workertest.Config) *harness {
	t.Helper()
	srv := natstest.RunServer(t)
	wnc := natstest.Connect(t, srv)
	w := workertest.Start(t, wnc, cfg)
	require.NoError(t, wnc.Flush()) // the worker's subscriptions are on the server
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "pharox"
	}
	c := client.New(natstest.Connect(t, srv), client.WithPrefix(prefix))
	return &harness{t: t, srv: srv, url: srv.ClientURL(), c: c, w: w,
		env: map[string]string{"PHAROX_NATS_URL": srv.ClientURL(), "PHAROX_SUBJECT_PREFIX": prefix}}
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// run runs a command line in-process with the harness's environment.
func (h *harness) run(args ...string) result {
	return h.runEnv(nil, args...)
}

func (h *harness) runEnv(extra map[string]string, args ...string) result {
	h.t.Helper()
	env := map[string]string{}
	for k, v := range h.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := execute(ctx, args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs a command that must succeed and returns its stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	require.Equal(h.t, 0, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
	return r.stdout
}

// okJSON runs a command with --json and decodes its output into T.
func okJSON[T any](h *harness, args ...string) T {
	h.t.Helper()
	out := h.ok(append(args, "--json")...)
	var v T
	require.NoError(h.t, json.Unmarshal([]byte(out), &v), out)
	return v
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// pool creates a pool with the given proxy URLs, max_concurrency 1 each.
func (h *harness) pool(name string, urls ...string) []model.Proxy {
	h.t.Helper()
	h.ok("pools", "create", name)
	if len(urls) == 0 {
		return nil
	}
	args := append([]string{"proxies", "add", "--pool", name, "--max-concurrency", "1", "--country", "AR"}, urls...)
	reply := okJSON[model.ProxiesReply](h, args...)
	require.Len(h.t, reply.Proxies, len(urls))
	return reply.Proxies
}

// lease reads a lease through the client.
func (h *harness) lease(id string) model.Lease {
	h.t.Helper()
	l, err := h.c.Lease(h.ctx(), id)
	require.NoError(h.t, err)
	return l
}

// envLines parses KEY=VALUE lines.
func envLines(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}
