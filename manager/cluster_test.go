package manager_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
)

// The invariant under load on a 3-node cluster with R3 buckets and stream,
// through two leader changes of every stream that matters: the proxies
// stream (the commits), the events stream and the outbox bucket are first
// moved to node n1 under load (a stepdown), then n1 is shut down (its
// leaderships handed over) and restarted. Workers and clients are connected
// to n2 and n3, so no request is lost with a connection: every request
// must succeed, and every check of the invariant test holds.
func TestInvariantUnderLoadClusterR3(t *testing.T) {
	c := natstest.RunCluster(t)
	n1 := c.Nodes()[0]
	others := []string{c.Nodes()[1].ClientURL(), c.Nodes()[2].ClientURL()}
	connect := func() *nats.Conn {
		nc, err := nats.Connect(strings.Join(others, ","), nats.MaxReconnects(-1), nats.Timeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// Fewer goroutines and longer deadlines than on one server: an R3
	// write costs ~4x an R1 write (3.9 against 0.9 ms serial, with -race),
	// and three servers share the test's cores.
	env := startInvariantEnvOn(t, invTarget{connect: connect, replicas: 3, goroutines: 16,
		clientTimeout: 30 * time.Second, requestTimeout: 20 * time.Second, liveRepeats: true})
	moved := []string{kvstore.ProxiesStream, events.StreamName, "KV_" + events.OutboxBucket}
	env.disrupt = func(granted *atomic.Int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// after waits until n more leases were granted.
		after := func(n int64) bool {
			want := granted.Load() + n
			for granted.Load() < want {
				if ctx.Err() != nil {
					t.Errorf("the load stalled at %d leases granted (waiting for %d)", granted.Load(), want)
					return false
				}
				time.Sleep(5 * time.Millisecond)
			}
			return true
		}
		if !after(50) {
			return
		}
		for _, s := range moved {
			if err := c.MoveStreamLeader(ctx, s, n1); err != nil {
				t.Error(err)
				return
			}
		}
		if !after(50) {
			return
		}
		stopped := time.Now()
		if err := n1.Stop(); err != nil {
			t.Error(err)
			return
		}
		if !after(1) {
			return
		}
		t.Logf("n1 (leader of %v) stopped: next lease granted after %v", moved, time.Since(stopped).Round(time.Millisecond))
		if !after(50) {
			return
		}
		if err := n1.Restart(ctx); err != nil {
			t.Error(err)
			return
		}
		if err := c.WaitReady(ctx); err != nil {
			t.Error(err)
			return
		}
		after(50)
	}
	runInvariant(t, env, invOpsNATS(env))
}
