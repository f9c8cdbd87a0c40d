package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// env is an embedded server, a real worker on its own connection and a
// client on another.
type env struct {
	t  testing.TB
	nc *nats.Conn
	c  *client.Client
	w  *workertest.Worker
}

func newEnv(t testing.TB, opts ...client.Option) *env {
	t.Helper()
	return newEnvWith(t, workertest.Config{}, opts...)
}

func newEnvWith(t testing.TB, cfg workertest.Config, opts ...client.Option) *env {
	t.Helper()
	srv := natstest.RunServer(t)
	wnc := natstest.Connect(t, srv)
	w := workertest.Start(t, wnc, cfg)
	// workertest.Start does not flush: make sure the server has the
	// worker's subscriptions before another connection sends requests.
	require.NoError(t, wnc.Flush())
	nc := natstest.Connect(t, srv)
	return &env{t: t, nc: nc, c: client.New(nc, opts...), w: w}
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newPoolEnv is the prelude most tests share: an env, the test's context
// and pool name with n proxies of max_concurrency limit (see env.pool).
func newPoolEnv(t testing.TB, name string, n, limit int) (*env, context.Context, []model.Proxy) {
	t.Helper()
	return newPoolEnvWith(t, workertest.Config{}, name, n, limit)
}

// newPoolEnvWith is newPoolEnv with a worker config and client options.
func newPoolEnvWith(t testing.TB, cfg workertest.Config, name string, n, limit int, opts ...client.Option) (*env, context.Context, []model.Proxy) {
	t.Helper()
	e := newEnvWith(t, cfg, opts...)
	return e, ctxT(t), e.pool(name, n, limit)
}

// pool creates a pool with n proxies of max_concurrency limit (0: unlimited),
// countries alternating AR, BR.
func (e *env) pool(name string, n, limit int) []model.Proxy {
	e.t.Helper()
	ctx := ctxT(e.t)
	_, err := e.c.CreatePool(ctx, model.PoolCreateRequest{Name: name})
	require.NoError(e.t, err)
	in := make([]model.ProxyInput, n)
	for i := range in {
		country := []string{"AR", "BR"}[i%2]
		in[i] = model.ProxyInput{Host: "10.0.0.1", Port: 3000 + i, Country: &country}
		if limit > 0 {
			in[i].MaxConcurrency = &limit
		}
	}
	proxies, err := e.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: name, Proxies: in})
	require.NoError(e.t, err)
	require.Len(e.t, proxies, n)
	return proxies
}

func ptr[T any](v T) *T { return &v }
