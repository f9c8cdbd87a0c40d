package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// TestFloodOfLargeAddsKeepsLeasing sends a burst of concurrent 1 MiB
// admin.proxies.add requests to one worker while 32 clients acquire and
// release through it: the connection leasing is served on is never
// dropped, no acquire or release fails or times out. The acquire latency
// during the flood is measured and reported, not asserted (it depends on
// the machine).
//
// CI sends 32 adds (33 MB, half the 64 MB a NATS server queues for one
// connection before dropping it as a slow consumer): then no connection is
// dropped at all and every add gets a reply (added, refused, or 503 when
// over the worker's intake for adds). PHAROX_SOAK=1 sends the 400 of the
// issue (415 MB at once): more than any one connection can be sent before
// it reads, so the server may drop the worker's intake connection (adds
// then get no reply, or "no responders" until it reconnects) but never the
// one leasing uses. One add in 20 is valid (1,000 proxies); the others
// have a bad last proxy, so they cost the worker the whole body's reading
// and decoding but leave no state behind.
func TestFloodOfLargeAddsKeepsLeasing(t *testing.T) {
	adds := 32
	if soak() {
		adds = 400
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := natstest.RunServer(t)
	wnc, intake := natstest.Connect(t, srv), natstest.Connect(t, srv)
	w := workertest.Start(t, wnc, workertest.Config{IntakeConn: intake})
	admin := client.New(natstest.Connect(t, srv))
	for _, pool := range []string{"lease", "bulk"} {
		_, err := admin.CreatePool(ctx, model.PoolCreateRequest{Name: pool})
		require.NoError(t, err)
	}
	in := make([]model.ProxyInput, 100)
	for i := range in {
		in[i] = model.ProxyInput{Host: fmt.Sprintf("10.9.0.%d", i), Port: 8080, MaxConcurrency: ptr(1)}
	}
	_, err := admin.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "lease", Proxies: in})
	require.NoError(t, err)

	// 32 leasing clients, each on its own connection.
	var (
		mu        sync.Mutex
		latencies []time.Duration
		timeouts  atomic.Int64
		failures  []string
	)
	// tally counts a leasing request's error, a time-out or a failure of
	// op, and says whether it was a time-out (worth asking again).
	tally := func(op string, err error) (timedOut bool) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			timeouts.Add(1)
			return true
		case err != nil:
			mu.Lock()
			failures = append(failures, op+": "+err.Error())
			mu.Unlock()
		}
		return false
	}
	flooding := make(chan struct{})
	stop := make(chan struct{})
	var leasing sync.WaitGroup
	for range 32 {
		c := client.New(natstest.Connect(t, srv), client.WithTimeout(10*time.Second))
		leasing.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if ctx.Err() != nil {
					return
				}
				start := time.Now()
				lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "lease"})
				took := time.Since(start)
				select {
				case <-flooding:
					mu.Lock()
					latencies = append(latencies, took)
					mu.Unlock()
				default:
				}
				tally("acquire", err)
				if err != nil || lease == nil {
					continue
				}
				for ctx.Err() == nil {
					_, err := c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
					if !tally("release", err) {
						break
					}
				}
			}
		})
	}

	// The flood: every add sent at once, from 16 connections.
	bodies := floodBodies(adds)
	senders := make([]*nats.Conn, 16)
	for i := range senders {
		senders[i] = natstest.Connect(t, srv)
	}
	outcomes := map[string]int{}
	var omu sync.Mutex
	var flood sync.WaitGroup
	start := time.Now()
	close(flooding)
	for i, body := range bodies {
		nc := senders[i%len(senders)]
		flood.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			msg, err := nc.RequestWithContext(rctx, "pharox.admin.proxies.add", body)
			outcome := "reply " + replyStatus(msg)
			if errors.Is(err, context.DeadlineExceeded) {
				outcome = "no reply within a minute"
			} else if err != nil {
				outcome = "error " + err.Error()
			}
			omu.Lock()
			outcomes[outcome]++
			omu.Unlock()
		})
	}
	flood.Wait()
	floodTook := time.Since(start)
	close(stop)
	leasing.Wait()

	slices.Sort(latencies)
	q := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Round(100 * time.Microsecond)
	}
	st := wnc.Stats()
	t.Logf("%d adds of %d bytes in %v: %v; %d acquires during the flood: p50 %v, p99 %v, max %v; %d lease time-outs; server slow consumers %d; worker reconnects %d, intake reconnects %d",
		adds, len(bodies[0]), floodTook.Round(time.Millisecond), outcomes, len(latencies), q(0.50), q(0.99), q(1), timeouts.Load(),
		srv.NumSlowConsumers(), st.Reconnects, intake.Stats().Reconnects)
	require.Empty(t, failures, "leasing requests that failed")
	require.Zero(t, timeouts.Load(), "leasing requests that timed out")
	require.Zero(t, st.Reconnects, "the worker's connection was lost")
	if !soak() {
		require.Zero(t, srv.NumSlowConsumers(), "connections the server dropped as slow consumers")
		for outcome := range outcomes {
			require.Contains(t, []string{"reply 200", "reply 400", "reply 503"}, outcome, "every add has a reply")
		}
	}
	stats, err := w.Manager.PoolStats(ctx, "lease")
	require.NoError(t, err)
	require.Zero(t, stats.TotalLeases)
}

// floodBodies are n admin.proxies.add bodies of about 1 MiB (under the
// limit): 1,000 proxies each; all but one in 20 end with a proxy whose
// port is out of range.
func floodBodies(n int) [][]byte {
	source := strings.Repeat("s", 990)
	out := make([][]byte, n)
	for b := range out {
		var sb strings.Builder
		sb.WriteString(`{"pool_name":"bulk","proxies":[`)
		for i := range model.MaxProxiesPerAdd {
			port := 1000 + i
			if i == model.MaxProxiesPerAdd-1 && b%20 != 0 {
				port = 70000
			}
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"host":"10.%d.%d.%d","port":%d,"source":"%s"}`, 100+b/256, b%256, i%250, port, source)
		}
		sb.WriteString(`]}`)
		if sb.Len() > broker.MaxProxiesBody {
			panic(fmt.Sprintf("flood body of %d bytes", sb.Len()))
		}
		out[b] = []byte(sb.String())
	}
	return out
}

// replyStatus is a reply's Nats-Service-Error-Code, 200 for a success.
func replyStatus(msg *nats.Msg) string {
	if msg == nil {
		return "none"
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return code
	}
	return "200"
}
