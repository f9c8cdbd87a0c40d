package events_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/streamaudit"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

func TestMain(m *testing.M) {
	workertest.RunChildIfAsked()
	os.Exit(m.Run())
}

// A worker killed with SIGKILL in the middle of a load leaves no committed
// change without its event: every acquire, release and expiry that its
// writes committed has exactly one event in PHAROX_EVENTS (published by it,
// or by the surviving worker from the write's own headers), and every lease
// those writes ended has its ending record. The proxies bucket keeps 64
// versions per key here, so that the audit sees every commit.
func TestEventsSurviveAKilledWorker(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: kvstore.ProxiesBucket, History: 64})
	require.NoError(t, err)

	child := workertest.StartChild(t, srv.ClientURL())
	survivor := workertest.Start(t, nc, workertest.Config{Heartbeat: 100 * time.Millisecond, DeadAfter: 600 * time.Millisecond})
	c := client.New(nc, client.WithTimeout(2*time.Second))
	_, err = c.CreatePool(ctx, model.PoolCreateRequest{Name: "crash"})
	require.NoError(t, err)
	one := 1
	for batch := 0; batch < 4; batch++ {
		in := make([]model.ProxyInput, 100)
		for i := range in {
			in[i] = model.ProxyInput{Host: fmt.Sprintf("10.0.%d.%d", batch, i), Port: 8080, MaxConcurrency: &one}
		}
		_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "crash", Proxies: in})
		require.NoError(t, err)
	}

	// 32 clients acquire and release on their own connections, which the
	// queue group spreads over both workers.
	var pairs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		gc := client.New(natstest.Connect(t, srv), client.WithTimeout(2*time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			secs := 30
			for {
				select {
				case <-stop:
					return
				default:
				}
				lease, _, err := gc.Acquire(ctx, model.AcquireRequest{PoolName: "crash", DurationSeconds: &secs})
				if err != nil || lease == nil {
					continue // a request to the killed worker times out
				}
				if _, err := gc.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID}); err == nil {
					pairs.Add(1)
				}
			}
		}()
	}
	for pairs.Load() < 300 {
		select {
		case <-ctx.Done():
			t.Fatal("no load")
		case <-time.After(10 * time.Millisecond):
		}
	}
	require.NoError(t, child.Kill())
	killedAt := pairs.Load()
	for pairs.Load() < killedAt+300 {
		select {
		case <-ctx.Done():
			t.Fatal("the surviving worker does not serve")
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	require.NoError(t, survivor.Events.Flush(ctx))

	proxyMsgs, err := streamaudit.ReadAll(ctx, js, kvstore.ProxiesStream)
	require.NoError(t, err)
	owed, err := streamaudit.AuditCommits(kvstore.ProxiesStream, proxyMsgs)
	require.NoError(t, err)
	start := time.Now()
	var missing []string
	for {
		eventMsgs, err := streamaudit.ReadAll(ctx, js, events.StreamName)
		require.NoError(t, err)
		stored, err := streamaudit.EventIDs(eventMsgs, "pharox.events.")
		require.NoError(t, err)
		missing = owed.Unpublished(stored)
		if len(missing) == 0 || ctx.Err() != nil || time.Since(start) > 20*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond) // the relay publishes once the dead worker's heartbeats have stopped
	}
	require.Empty(t, missing, "events of committed writes missing from %s", events.StreamName)
	t.Logf("%d pairs, %d committed writes from %d workers owing %d events (%d by the killed worker); all stored %v after the load",
		pairs.Load(), owed.Writes, len(owed.ByWorker), len(owed.Events), owed.ByWorker[child.ID], time.Since(start).Round(time.Millisecond))

	leases, err := js.KeyValue(ctx, kvstore.LeasesBucket)
	require.NoError(t, err)
	for id, status := range owed.Endings {
		e, err := leases.Get(ctx, id)
		require.NoError(t, err, "ending record of lease %s", id)
		require.Contains(t, string(e.Value()), `"status":"`+string(status)+`"`, "lease %s", id)
	}
}

