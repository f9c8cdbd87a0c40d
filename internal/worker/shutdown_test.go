package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

func TestMain(m *testing.M) {
	workertest.RunChildIfAsked()
	os.Exit(m.Run())
}

// soak says whether the full-size variants run (PHAROX_SOAK=1); CI runs
// smaller ones.
func soak() bool { return os.Getenv("PHAROX_SOAK") != "" }

// TestSIGTERMUnderLoad stops a worker process with SIGTERM while 256
// clients acquire and release through it and another worker, the stopping
// one taking one request at a time (--max-inflight 1): its requests end
// as a lease, null, 503 or a client time-out, nothing else; it exits
// cleanly; every lease it committed was replied to and has its event;
// and the pool's statistics reach zero once the clients have released
// what they hold.
func TestSIGTERMUnderLoad(t *testing.T) {
	h := newShutdownHarness(t, workertest.ChildConfig{MaxInflight: 1})
	h.addProxies(t, "term", 300)

	var pairs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 256 {
		c := h.clients[g%len(h.clients)]
		wg.Go(func() {
			secs := 120
			for {
				select {
				case <-stop:
					return
				default:
				}
				lease, _, err := c.Acquire(h.ctx, model.AcquireRequest{PoolName: "term", DurationSeconds: &secs})
				if h.out.acquired(lease, err) {
					h.release(c, lease.ID)
					pairs.Add(1)
				}
			}
		})
	}
	h.waitFor(t, "load", func() bool { return pairs.Load() >= 500 })
	stopped := h.terminate(t)
	at := pairs.Load()
	h.waitFor(t, "the other worker serving", func() bool { return pairs.Load() >= at+300 })
	close(stop)
	wg.Wait()

	h.report(t, stopped)
	h.requireClean(t, "term", stopped)
}

// TestSIGTERMWithParkedWaiters stops a worker process with SIGTERM while
// acquires wait (wait_seconds 60) on it and on another worker for proxies
// that are all leased, and frees those proxies as it stops: the stopping
// worker's waiters try once more and get 503 at once if nothing is free
// (not null, not silence); the other worker's waiters are served as the
// proxies come free; and every lease committed was replied to, has its
// event and is released in the end.
//
// CI runs 300 waiters on 60 proxies, freed as the SIGTERM is sent;
// PHAROX_SOAK=1 runs the probe that found the bugs: 1,500 waiters on 300
// proxies, freed 9.95 s after the SIGTERM (just before a 10 s stop
// deadline would end the process).
func TestSIGTERMWithParkedWaiters(t *testing.T) {
	waiters, proxies, freeAfter := 300, 60, time.Duration(0)
	if soak() {
		waiters, proxies, freeAfter = 1500, 300, 9950*time.Millisecond
	}
	h := newShutdownHarness(t, workertest.ChildConfig{})
	h.addProxies(t, "park", proxies)
	held := make([]string, 0, proxies)
	for len(held) < proxies {
		lease, _, err := h.clients[0].Acquire(h.ctx, model.AcquireRequest{PoolName: "park", DurationSeconds: ptr(120)})
		require.True(t, h.out.acquired(lease, err), "%v", err)
		held = append(held, lease.ID)
	}

	var sent, done atomic.Int64
	var wg sync.WaitGroup
	var signalled atomic.Int64 // unix nanos of the SIGTERM
	var fast atomic.Int64      // 503s within a second of the SIGTERM
	for i := range waiters {
		c := h.clients[i%len(h.clients)]
		wg.Go(func() {
			defer done.Add(1)
			sent.Add(1)
			lease, _, err := c.Acquire(h.ctx, model.AcquireRequest{PoolName: "park", DurationSeconds: ptr(120), WaitSeconds: ptr(60.0)})
			if s := signalled.Load(); s != 0 && isUnavailable(err) && time.Since(time.Unix(0, s)) < time.Second {
				fast.Add(1)
			}
			if h.out.acquired(lease, err) {
				h.release(c, lease.ID)
			}
		})
	}
	h.waitFor(t, "waiters sent", func() bool { return sent.Load() == int64(waiters) })
	for _, nc := range h.conns {
		require.NoError(t, nc.FlushWithContext(h.ctx))
	}
	require.Zero(t, done.Load(), "a waiter was answered before any proxy came free")

	signalled.Store(time.Now().UnixNano())
	stopped := h.terminateThen(t, func() {
		// Free the proxies while the worker stops: the waiters it cut
		// short race these releases. The soak's pause is the probe's
		// shape, not a wait for anything.
		select {
		case <-time.After(freeAfter):
		case <-h.ctx.Done():
		}
		for i, id := range held {
			h.release(h.clients[i%len(h.clients)], id)
		}
	})
	wg.Wait()

	h.report(t, stopped)
	t.Logf("%d waiters on %d proxies freed %v after the SIGTERM; %d answered 503 within a second of it", waiters, proxies, freeAfter, fast.Load())
	h.requireClean(t, "park", stopped)
}

// shutdownHarness is a NATS server, a worker process to stop, a worker in
// this process that goes on, and clients on their own connections.
type shutdownHarness struct {
	ctx      context.Context
	srv      *server.Server
	js       jetstream.JetStream
	child    *workertest.Child
	survivor *workertest.Worker
	conns    []*nats.Conn
	clients  []*client.Client
	out      *outcomes
}

func newShutdownHarness(t *testing.T, cfg workertest.ChildConfig) *shutdownHarness {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// Every commit stays in the proxies stream for the audit.
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: kvstore.ProxiesBucket, History: 64})
	require.NoError(t, err)
	h := &shutdownHarness{ctx: ctx, srv: srv, js: js, out: newOutcomes()}
	h.child = workertest.StartChild(t, srv.ClientURL(), cfg)
	h.survivor = workertest.Start(t, nc, workertest.Config{Heartbeat: 100 * time.Millisecond, DeadAfter: 600 * time.Millisecond})
	for range 32 {
		c := natstest.Connect(t, srv)
		h.conns = append(h.conns, c)
		// Longer than any request may take on a worker (5 s, plus a wait).
		h.clients = append(h.clients, client.New(c, client.WithTimeout(15*time.Second)))
	}
	return h
}

func (h *shutdownHarness) addProxies(t *testing.T, pool string, n int) {
	_, err := h.clients[0].CreatePool(h.ctx, model.PoolCreateRequest{Name: pool})
	require.NoError(t, err)
	for start := 0; start < n; start += 500 {
		in := make([]model.ProxyInput, min(500, n-start))
		for i := range in {
			in[i] = model.ProxyInput{Host: fmt.Sprintf("10.1.%d.%d", (start+i)/250, (start+i)%250), Port: 8080, MaxConcurrency: ptr(1)}
		}
		_, err = h.clients[0].AddProxies(h.ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: in})
		require.NoError(t, err)
	}
}

// release gives a lease back, again after a 503 or a time-out (a release
// is idempotent), until it is released.
func (h *shutdownHarness) release(c *client.Client, id string) {
	for h.ctx.Err() == nil {
		_, err := c.Release(h.ctx, model.ReleaseRequest{LeaseID: id})
		if !h.out.released(err) {
			return
		}
	}
}

// stopped is how the worker process ended.
type stopped struct {
	err  error
	took time.Duration
}

func (h *shutdownHarness) terminate(t *testing.T) stopped {
	return h.terminateThen(t, func() {})
}

// terminateThen sends SIGTERM, runs also while the worker stops, and
// waits for both; took is how long the worker took to exit.
func (h *shutdownHarness) terminateThen(t *testing.T, also func()) stopped {
	start := time.Now()
	require.NoError(t, h.child.Signal())
	var wg sync.WaitGroup
	wg.Go(also)
	err := h.child.Wait()
	s := stopped{err: err, took: time.Since(start)}
	wg.Wait()
	return s
}

func (h *shutdownHarness) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-h.ctx.Done():
			t.Fatalf("waiting for %s: %v", what, h.ctx.Err())
		case <-tick.C:
		}
	}
}

func (h *shutdownHarness) report(t *testing.T, s stopped) {
	t.Logf("worker stopped in %v (exit: %v); outcomes: %s", s.took.Round(time.Millisecond), s.err, h.out)
}

// requireClean checks what a clean stop promises: only the allowed
// outcomes, a clean exit, statistics back to zero once every lease handed
// out is released, every committed lease replied to, and every event the
// commits owe stored once.
func (h *shutdownHarness) requireClean(t *testing.T, pool string, s stopped) {
	t.Helper()
	start := time.Now()
	var st model.PoolStatsSnapshot
	var err error
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 10*time.Second {
		if st, err = h.clients[0].Stats(h.ctx, pool); err == nil && st.TotalLeases == 0 {
			break
		}
		<-tick.C
	}
	t.Logf("stats reached total_leases %d after %v", st.TotalLeases, time.Since(start).Round(time.Millisecond))

	owed := workertest.AuditCommits(t, h.ctx, h.js)
	var unreplied []string
	for id, worker := range owed.Acquired {
		if !h.out.replied(id) {
			unreplied = append(unreplied, id+" by "+worker)
		}
	}
	missing, took := workertest.MissingEvents(t, h.ctx, h.js, owed, 10*time.Second)
	t.Logf("audit: %d committed writes owing %d events (%d by the stopped worker), %d leases committed; %d without a reply, %d events missing after %v",
		owed.Writes, len(owed.Events), owed.ByWorker[h.child.ID], len(owed.Acquired), len(unreplied), len(missing), took.Round(time.Millisecond))

	require.Empty(t, h.out.unexpectedList(), "outcomes other than a lease, null, 503 or a time-out")
	require.NoError(t, s.err, "the worker did not stop cleanly")
	require.NoError(t, err)
	require.Zero(t, st.TotalLeases, "leases still held 10 s after the last release")
	require.Empty(t, unreplied, "committed leases without a reply")
	require.Empty(t, missing, "events of committed writes missing")
	require.Empty(t, workertest.MissingEndings(t, h.ctx, h.js, owed), "ending records")
}

// outcomes counts how requests ended and which leases were replied to.
type outcomes struct {
	mu         sync.Mutex
	counts     map[string]int
	leases     map[string]bool
	unexpected []string
}

func newOutcomes() *outcomes { return &outcomes{counts: map[string]int{}, leases: map[string]bool{}} }

// acquired records an acquire's outcome and says whether it leased.
func (o *outcomes) acquired(lease *model.Lease, err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err == nil && lease != nil:
		o.counts["acquire: lease"]++
		o.leases[lease.ID] = true
		return true
	case err == nil:
		o.counts["acquire: null"]++
	default:
		o.record("acquire", err)
	}
	return false
}

// released records a release's outcome and says whether to try again (a
// 503 or a time-out).
func (o *outcomes) released(err error) (again bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		o.counts["release: ok"]++
		return false
	}
	return o.record("release", err)
}

// record counts a failed request; false for an outcome not allowed.
func (o *outcomes) record(op string, err error) bool {
	var ce *client.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		o.counts[op+": time-out"]++
	case errors.As(err, &ce) && ce.Status == 503:
		o.counts[op+": 503"]++
	case isUnavailable(err):
		o.counts[op+": no responders"]++
	default:
		o.counts[op+": other"]++
		o.unexpected = append(o.unexpected, op+": "+err.Error())
		return false
	}
	return true
}

func (o *outcomes) replied(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.leases[id]
}

func (o *outcomes) unexpectedList() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.unexpected) > 10 {
		return append(o.unexpected[:10:10], fmt.Sprintf("... and %d more", len(o.unexpected)-10))
	}
	return append([]string(nil), o.unexpected...)
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys := make([]string, 0, len(o.counts))
	for k := range o.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, o.counts[k])
	}
	return strings.Join(parts, ", ")
}

func isUnavailable(err error) bool { return errors.Is(err, model.ErrUnavailable) }
