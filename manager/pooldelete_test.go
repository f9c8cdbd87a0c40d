package manager_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// A pool deleted while proxies are being added to it through two workers
// leaves nothing of itself: every add either lands before the delete (and
// is deleted with the pool) or fails with pool_not_found, no proxy of the
// old pool can be read, and a pool re-created under the name is empty.
// Twenty rounds, four clients adding three batches of 100 each.
func TestPoolDeleteRacingAdds(t *testing.T) {
	srv := natstest.RunServer(t)
	workertest.Start(t, natstest.Connect(t, srv), workertest.Config{})
	workertest.Start(t, natstest.Connect(t, srv), workertest.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := client.New(natstest.Connect(t, srv))
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	proxies, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	require.NoError(t, err)

	var landed, refused, survived int
	for round := 0; round < 20; round++ {
		name := fmt.Sprintf("race-%d", round)
		pool, err := admin.CreatePool(ctx, model.PoolCreateRequest{Name: name})
		require.NoError(t, err)
		var mu sync.Mutex
		var added []string
		var wg sync.WaitGroup
		start, first := make(chan struct{}), make(chan struct{})
		var once sync.Once
		for c := 0; c < 4; c++ {
			cl := client.New(natstest.Connect(t, srv))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for b := 0; b < 3; b++ {
					in := make([]model.ProxyInput, 100)
					for i := range in {
						in[i] = model.ProxyInput{Host: fmt.Sprintf("10.%d.%d.%d", c, b, i), Port: 8000 + round}
					}
					got, err := cl.AddProxies(ctx, model.ProxiesAddRequest{PoolName: name, Proxies: in})
					once.Do(func() { close(first) })
					mu.Lock()
					switch {
					case err == nil:
						landed++
						for _, p := range got {
							added = append(added, p.ID)
						}
					case errors.Is(err, model.ErrPoolNotFound):
						refused++
					default:
						t.Errorf("round %d: add: %v", round, err)
					}
					mu.Unlock()
				}
			}()
		}
		close(start)
		<-first // the delete runs while the other batches are being added
		require.NoError(t, admin.DeletePool(ctx, model.PoolDeleteRequest{Name: name, Force: true}))
		wg.Wait()

		for _, id := range added {
			_, err := admin.GetProxy(ctx, id)
			require.ErrorIs(t, err, model.ErrProxyNotFound, "round %d: a proxy of the deleted pool is readable", round)
		}
		again, err := admin.CreatePool(ctx, model.PoolCreateRequest{Name: name})
		require.NoError(t, err)
		require.NotEqual(t, pool.ID, again.ID, "a re-created pool is a new pool")
		page, err := admin.ListProxies(ctx, model.ProxiesListRequest{PoolName: name})
		require.NoError(t, err)
		require.Empty(t, page.Proxies, "round %d: the re-created pool has members", round)
		st, err := admin.Stats(ctx, name)
		require.NoError(t, err)
		require.Zero(t, st.TotalProxies, "round %d: the re-created pool counts proxies", round)
		lease, _, err := admin.Acquire(ctx, model.AcquireRequest{PoolName: name})
		require.NoError(t, err)
		require.Nil(t, lease, "round %d: a proxy of the old pool was leased", round)
		survived += recordsOfPool(t, ctx, proxies, pool.ID)
	}
	require.Zero(t, survived, "proxy records of deleted pools left in the bucket")
	t.Logf("20 rounds: %d adds landed before their pool's delete, %d refused with pool_not_found; 0 proxies survived", landed, refused)
}

// recordsOfPool counts the records in the proxies bucket that carry poolID.
func recordsOfPool(t *testing.T, ctx context.Context, kv jetstream.KeyValue, poolID string) int {
	t.Helper()
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	n := 0
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		require.NoError(t, err)
		rec, err := record.DecodeProxy(e.Value())
		require.NoError(t, err)
		if rec.PoolID == poolID {
			n++
		}
	}
	return n
}
