package worker_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// TestRekeyUnderLoad rotates the credentials key of a pool whose proxies
// are sealed with the old key, or stored in clear by a worker without one,
// while two workers (old and new keys) serve acquire+release pairs: no
// acquire fails, a lease held across the rotation is intact, and afterwards
// a worker with only the new key reads every proxy.
func TestRekeyUnderLoad(t *testing.T) {
	t.Parallel()
	srv, nc := runServer(t)
	ctx := t.Context()
	oldKey, newKey := newKey(t), newKey(t)
	c := client.New(nc, client.WithTimeout(timeout))
	const sealed, clear, bare = 300, 20, 10

	add := func(n int, pw string, creds bool) {
		in := make([]model.ProxyInput, n)
		for i := range in {
			in[i] = model.ProxyInput{Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250), Port: 3128, MaxConcurrency: ptr(1)}
			if creds {
				in[i].Credentials = &model.Credentials{User: "u", Password: fmt.Sprintf("%s-%d", pw, i)}
			}
		}
		_, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "rot", Proxies: in})
		require.NoError(t, err)
	}
	w := workertest.Start(t, nc, workertest.Config{CredentialsKeys: newRing(t, oldKey)})
	_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "rot"})
	require.NoError(t, err)
	add(sealed, "sealed-pw", true)
	add(bare, "", false)
	w.Stop()
	w = workertest.Start(t, nc, workertest.Config{})
	add(clear, "clear-pw", true)
	w.Stop()

	rotated := newRing(t, newKey, oldKey)
	for range 2 {
		workertest.Start(t, natstest.Connect(t, srv), workertest.Config{CredentialsKeys: rotated})
	}
	held, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "rot", ConsumerName: ptr("holder"), DurationSeconds: ptr(600)})
	require.NoError(t, err)
	require.NotNil(t, held)

	var pairs, failures atomic.Int64
	var failed sync.Map
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range 8 {
		load.Go(func() {
			lc := client.New(natstest.Connect(t, srv), client.WithTimeout(timeout))
			consumer := fmt.Sprintf("load-%d", i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				lease, proxy, err := lc.Acquire(ctx, model.AcquireRequest{PoolName: "rot", ConsumerName: &consumer, Selector: ptr(model.SelectorRandom)})
				if err != nil || lease == nil {
					failures.Add(1)
					failed.Store(fmt.Sprint(err), true)
					continue
				}
				if proxy.Credentials != nil && !strings.Contains(proxy.URL, "-pw-") {
					failures.Add(1)
					failed.Store("credentials missing from "+proxy.URL, true)
				}
				if _, err := lc.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID}); err != nil {
					failures.Add(1)
					failed.Store(fmt.Sprint(err), true)
					continue
				}
				pairs.Add(1)
			}
		})
	}

	rk, err := worker.Start(ctx, worker.Config{Conn: natstest.Connect(t, srv), CredentialsKeys: rotated, Maintenance: true})
	require.NoError(t, err)
	before := pairs.Load()
	res, err := rk.Manager.RekeyCredentials(ctx, 16, nil)
	during := pairs.Load() - before
	close(stop)
	load.Wait()
	require.NoError(t, err)
	require.NoError(t, rk.Stop(ctx))
	failed.Range(func(k, _ any) bool { t.Errorf("during the rotation: %v", k); return true })
	require.Zero(t, failures.Load(), "no acquire failed")
	require.Positive(t, during, "pairs ran during the rotation")
	t.Logf("rekey: %+v; %d pairs during it", res, during)
	require.Equal(t, sealed+clear+bare, res.Proxies)
	require.Empty(t, res.Unreadable)
	require.Positive(t, res.Rewritten)
	require.LessOrEqual(t, res.Rewritten, sealed+clear, "the proxies the load wrote meanwhile were sealed with the new key by those writes")

	// The lease held across the rotation is intact.
	got, err := c.Lease(ctx, held.ID)
	require.NoError(t, err)
	require.Equal(t, model.LeaseActive, got.Status)
	require.Equal(t, held.FencingToken, got.FencingToken)
	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: held.ID})
	require.NoError(t, err)

	// Nothing in clear is left in the bucket, and a worker with only the
	// new key reads every proxy.
	raw := strings.Join(streamMessages(t, nc, kvstore.ProxiesStream), "\n")
	require.NotContains(t, raw, "clear-pw-")
	require.NotContains(t, raw, "pxc1."+newRing(t, oldKey).Primary()+".")
	only, err := worker.Start(ctx, worker.Config{Conn: natstest.Connect(t, srv), CredentialsKeys: newRing(t, newKey), Maintenance: true})
	require.NoError(t, err)
	defer func() { require.NoError(t, only.Stop(ctx)) }()
	require.Zero(t, only.Store.UnreadableCredentials())
	again, err := only.Manager.RekeyCredentials(ctx, 4, nil)
	require.NoError(t, err)
	require.Zero(t, again.Rewritten)
	require.Equal(t, sealed+clear+bare, again.Current)
	n := 0
	for p, err := range c.AllProxies(ctx, model.ProxiesListRequest{PoolName: "rot"}) {
		require.NoError(t, err)
		if p.Credentials != nil {
			require.Contains(t, p.Credentials.Password, "-pw-")
			n++
		}
	}
	require.Equal(t, sealed+clear, n)
}
