package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/streamaudit"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
)

// Failover under load: a 3-node cluster whose nodes are child processes,
// R3 buckets and stream, 2 workers and 32 clients (each on its own
// connection, spread over the nodes) acquiring and releasing with plain
// calls. Mid-run the node leading the proxies stream is killed with
// SIGKILL and later restarted on its store. Checked:
//
//   - no over-lease in any committed revision of any proxy (every revision
//     read by a durable R3 consumer, which loses nothing with a node);
//   - every lease that was ever a holder was acquired once and ended once
//     (released or expired), and its acquire and its ending each have
//     exactly one event in PHAROX_EVENTS, as has every event any committed
//     write owed (the outbox relay works across the leader change);
//   - every lease a client got was released by it (or had expired), as the
//     committed records say; stats end at 0 on both workers;
//   - clients only ever see a lease, "none free", 503 or their own
//     time-out;
//   - acquires succeed again within 20 s of the kill, and the bucket
//     watches resume within a few seconds of the writes.
//
// PHAROX_FAILOVER_ROUNDS=n kills and restarts n times (a longer run; the
// default is one round).
func TestFailoverUnderLoad(t *testing.T) {
	rounds := 1
	if v := os.Getenv("PHAROX_FAILOVER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PHAROX_FAILOVER_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	const (
		proxies    = 200
		clients    = 32
		leaseSecs  = 6
		clientWait = 10 * time.Second
	)
	c := natstest.RunClusterProcesses(t)
	admin := natstest.ConnectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(3+rounds)*time.Minute)
	defer cancel()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	// History 64 so that the audit can read every revision (see proxyWatch).
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: kvstore.ProxiesBucket,
		History: 64, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	watch := startProxyWatch(t, ctx, js, 3)
	lag := &lagWatch{}
	for i := 0; i < 3; i++ { // consumers land on any node: some on the one killed
		lag.start(t, ctx, natstest.ConnectCluster(t, c))
	}

	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	var workers []*workertest.Worker
	for i := 0; i < 2; i++ {
		workers = append(workers, workertest.Start(t, natstest.ConnectCluster(t, c), workertest.Config{
			Replicas: 3, SweepInterval: time.Second, Log: log.With(zap.Int("worker", i))}))
	}
	m := workers[0].Manager
	if _, err := m.CreatePool(ctx, model.PoolCreateRequest{Name: "failover"}); err != nil {
		t.Fatal(err)
	}
	one := 1
	for batch := 0; batch < proxies/100; batch++ {
		in := make([]model.ProxyInput, 100)
		for i := range in {
			in[i] = model.ProxyInput{Host: fmt.Sprintf("10.9.%d.%d", batch, i), Port: 8080, MaxConcurrency: &one}
		}
		if _, err := m.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "failover", Proxies: in}); err != nil {
			t.Fatal(err)
		}
	}

	load := newFailoverLoad()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < clients; g++ {
		nc := natstest.ConnectCluster(t, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			load.client(ctx, nc, g, leaseSecs, clientWait, stop)
		}()
	}
	waitGrants := func(n int64, within time.Duration, what string) {
		t.Helper()
		want := load.granted.Load() + n
		deadline := time.Now().Add(within)
		for load.granted.Load() < want {
			if time.Now().After(deadline) || ctx.Err() != nil {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: %d leases granted in %v, waiting for %d", what, load.granted.Load(), within, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitGrants(200, time.Minute, "before the kill")
	for round := 0; round < rounds; round++ {
		leader, err := c.StreamLeader(ctx, kvstore.ProxiesStream)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %s", round+1, watchPlacement(ctx, js, leader.Name()))
		killed := time.Now()
		if err := leader.Kill(); err != nil {
			t.Fatal(err)
		}
		load.markKill(killed)
		waitGrants(1, 20*time.Second, "acquires after the kill of "+leader.Name())
		t.Logf("round %d: killed %s (leader of %s); next lease granted after %v", round+1, leader.Name(),
			kvstore.ProxiesStream, time.Since(killed).Round(time.Millisecond))
		waitGrants(100, time.Minute, "after the kill")
		if err := leader.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitStreamsCurrent(ctx); err != nil {
			t.Fatal(err)
		}
		waitGrants(100, time.Minute, "after the restart")
	}
	close(stop)
	wg.Wait()

	// Leases nobody was told of (their acquire's reply was lost) expire;
	// the sweeps record them.
	stats := func() string {
		var out []string
		for i, w := range workers {
			st, err := w.Manager.PoolStats(ctx, "failover")
			if err != nil {
				return err.Error()
			}
			if st.TotalLeases != 0 {
				out = append(out, fmt.Sprintf("worker %d: %d leases", i, st.TotalLeases))
			}
		}
		return fmt.Sprint(out)
	}
	for deadline := time.Now().Add(time.Duration(leaseSecs)*time.Second + 20*time.Second); stats() != "[]"; {
		if time.Now().After(deadline) {
			t.Fatalf("stats do not end at 0: %s", stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The counts reach 0 by the clock; the holders leave the records with
	// the sweep's writes, which may not have run yet: run one now, so the
	// audit below sees every expiry recorded by a committed write.
	if _, err := workers[0].Manager.CleanupExpiredLeases(ctx); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	for _, w := range workers {
		if err := w.Events.Flush(ctx); err != nil {
			t.Fatalf("flush events: %v", err)
		}
	}
	var st model.PoolStatsSnapshot
	if _, err := natsCall(ctx, admin, "pharox.stats", model.StatsRequest{PoolName: "failover"}, &st); err != nil {
		t.Fatal(err)
	}
	if st.TotalLeases != 0 || st.LeasedProxies != 0 {
		t.Errorf("pharox.stats at the end: %+v", st)
	}

	watch.waitCaughtUp(t, ctx, js)
	load.report(t)
	checkFailoverCommits(t, ctx, js, watch, load)
	t.Logf("bucket watch: longest delay between a write being stored and delivered %v", lag.worst().Round(time.Millisecond))
	// A SIGKILLed leader leaves its streams leaderless for 4-9 s on this
	// machine (nats-facts); writes stored just before the kill reach the
	// watches after the election. A watch that does not resume stays still
	// far longer.
	if w := lag.worst(); w > 15*time.Second {
		t.Errorf("a bucket watch stood still %v after a node's death", w)
	}
}

// failoverLoad is what the clients saw.
type failoverLoad struct {
	granted atomic.Int64

	mu       sync.Mutex
	outcomes map[string]int       // acquire and release outcomes by kind
	grants   map[string]heldLease // lease id -> what its client saw
	acquired []time.Time          // when each successful acquire was answered
	kills    []time.Time
	odd      []string // replies outside the contract
}

type heldLease struct {
	lease  model.Lease
	ending model.LeaseStatus // what the client's release answered
}

func newFailoverLoad() *failoverLoad {
	return &failoverLoad{outcomes: map[string]int{}, grants: map[string]heldLease{}}
}

func (l *failoverLoad) markKill(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kills = append(l.kills, at)
}

// client acquires, holds 0-5 ms and releases until stop, with plain
// calls: an acquire that fails is not retried (a new one is made), a
// release is sent again until it is answered.
func (l *failoverLoad) client(ctx context.Context, nc *nats.Conn, g, leaseSecs int, wait time.Duration, stop <-chan struct{}) {
	r := rand.New(rand.NewPCG(uint64(g), 7))
	consumer := fmt.Sprintf("c%02d", g)
	for {
		select {
		case <-stop:
			return
		default:
		}
		secs := leaseSecs
		var rep model.AcquireReply
		kind := l.call(ctx, nc, "pharox.acquire", model.AcquireRequest{PoolName: "failover", ConsumerName: &consumer, DurationSeconds: &secs}, &rep, wait)
		if kind != "ok" {
			l.count("acquire "+kind, 1)
			if kind == "503" || kind == "no responders" {
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		if rep.Lease == nil {
			l.count("acquire null", 1)
			time.Sleep(time.Duration(1+r.IntN(3)) * time.Millisecond)
			continue
		}
		l.granted.Add(1)
		l.mu.Lock()
		l.outcomes["acquire lease"]++
		l.acquired = append(l.acquired, time.Now())
		l.grants[rep.Lease.ID] = heldLease{lease: *rep.Lease}
		l.mu.Unlock()
		time.Sleep(time.Duration(r.IntN(5001)) * time.Microsecond)
		for attempt := 0; ; attempt++ {
			var rel model.LeaseReply
			kind := l.call(ctx, nc, "pharox.release", model.ReleaseRequest{LeaseID: rep.Lease.ID, ConsumerName: &consumer}, &rel, wait)
			l.count("release "+kind, 1)
			if kind == "ok" && rel.Lease != nil {
				l.mu.Lock()
				h := l.grants[rep.Lease.ID]
				h.ending = rel.Lease.Status
				l.grants[rep.Lease.ID] = h
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil || attempt > 100 {
				l.mu.Lock()
				l.odd = append(l.odd, fmt.Sprintf("release of %s never answered", rep.Lease.ID))
				l.mu.Unlock()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// call sends a request and sorts its outcome: ok, 503, no responders,
// timeout; anything
// else is recorded as outside the contract.
func (l *failoverLoad) call(ctx context.Context, nc *nats.Conn, subject string, req, reply any, wait time.Duration) string {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	data, _ := json.Marshal(req)
	msg, err := nc.RequestWithContext(rctx, subject, data)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.Is(err, nats.ErrNoResponders):
		// No worker was subscribed at that moment (every worker's connection
		// was on the killed node and had not reconnected yet): nothing was
		// changed, and the Go client reports it as ErrUnavailable, a 503.
		return "no responders"
	case err != nil:
		l.mu.Lock()
		l.odd = append(l.odd, fmt.Sprintf("%s: %v", subject, err))
		l.mu.Unlock()
		return "error"
	}
	switch code := msg.Header.Get("Nats-Service-Error-Code"); code {
	case "":
	case "503":
		return "503"
	default:
		l.mu.Lock()
		l.odd = append(l.odd, fmt.Sprintf("%s: %s %s", subject, code, msg.Data))
		l.mu.Unlock()
		return code
	}
	if err := json.Unmarshal(msg.Data, reply); err != nil {
		l.mu.Lock()
		l.odd = append(l.odd, fmt.Sprintf("%s: %s: %v", subject, msg.Data, err))
		l.mu.Unlock()
		return "error"
	}
	return "ok"
}

func (l *failoverLoad) count(kind string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes[kind] += n
}

// report logs what the clients saw and fails on a reply outside the
// contract, and on a gap without a successful acquire of 20 s or more.
func (l *failoverLoad) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, o := range l.odd {
		if i == 10 {
			t.Errorf("... %d more", len(l.odd)-10)
			break
		}
		t.Errorf("outside the contract: %s", o)
	}
	slices.SortFunc(l.acquired, func(a, b time.Time) int { return a.Compare(b) })
	for _, k := range l.kills {
		// The longest wait for a successful acquire from a second before
		// the kill to half a minute after it.
		var gap time.Duration
		var first time.Time
		for i := 1; i < len(l.acquired); i++ {
			a, b := l.acquired[i-1], l.acquired[i]
			if b.Before(k.Add(-time.Second)) || a.After(k.Add(30*time.Second)) {
				continue
			}
			gap = max(gap, b.Sub(a))
		}
		for _, a := range l.acquired {
			if a.After(k) {
				first = a
				break
			}
		}
		t.Logf("kill at +%v: longest wait for a successful acquire around it %v (first answered lease %v after it)",
			k.Sub(l.acquired[0]).Round(time.Millisecond), gap.Round(time.Millisecond), first.Sub(k).Round(time.Millisecond))
		if first.IsZero() {
			t.Errorf("no acquire succeeded after the kill")
		}
		if gap >= 20*time.Second {
			t.Errorf("no acquire succeeded for %v around the kill", gap)
		}
	}
	var longest time.Duration
	for i := 1; i < len(l.acquired); i++ {
		longest = max(longest, l.acquired[i].Sub(l.acquired[i-1]))
	}
	t.Logf("clients saw %v; longest gap without a successful acquire %v", l.outcomes, longest.Round(time.Millisecond))
}

// checkFailoverCommits audits every committed revision of the proxies
// stream: holders, events owed and stored, ending records.
func checkFailoverCommits(t *testing.T, ctx context.Context, js jetstream.JetStream, w *proxyWatch, load *failoverLoad) {
	t.Helper()
	if len(w.gaps) > 0 {
		t.Errorf("the audit missed proxies-stream sequences %v", w.gaps)
	}
	// Holders: at most one (max_concurrency 1), each lease one span that ends.
	type span struct {
		proxy    string
		from, to uint64
	}
	spans := map[string]*span{}
	for proxy, revs := range w.revs {
		prev := map[string]bool{}
		for _, rv := range revs {
			if len(rv.holders) > 1 {
				t.Errorf("OVER-LEASE: proxy %s revision %d holds %v", proxy, rv.rev, rv.holders)
			}
			cur := map[string]bool{}
			for _, id := range rv.holders {
				cur[id] = true
				if !prev[id] {
					if s, ok := spans[id]; ok {
						t.Errorf("lease %s back on proxy %s at %d after leaving it at %d", id, proxy, rv.rev, s.to)
						continue
					}
					spans[id] = &span{proxy: proxy, from: rv.rev}
				}
			}
			for id := range prev {
				if !cur[id] {
					spans[id].to = rv.rev
				}
			}
			prev = cur
		}
	}
	// Events owed, per lease.
	msgs := w.log.Messages()
	owed, err := streamaudit.AuditCommits(kvstore.ProxiesStream, msgs)
	if err != nil {
		t.Fatal(err)
	}
	acquired, ended := map[string]int{}, map[string][]string{}
	for _, m := range msgs {
		h := m.Header.Get(outbox.Header)
		if h == "" {
			continue
		}
		e, err := outbox.Decode(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range e.Events {
			switch p := ev.Payload.(type) {
			case *model.AcquireEvent:
				acquired[p.Lease.ID]++
			case *model.ReleaseEvent:
				ended[p.Lease.ID] = append(ended[p.Lease.ID], model.EventReleased)
			case *model.ExpiredEvent:
				ended[p.Lease.ID] = append(ended[p.Lease.ID], model.EventExpired)
			}
		}
	}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for id, s := range spans {
		switch {
		case s.to == 0:
			report("LOST LEASE: %s is still held on proxy %s (since %d)", id, s.proxy, s.from)
		case acquired[id] != 1:
			report("lease %s acquired by %d committed writes", id, acquired[id])
		case len(ended[id]) != 1:
			report("lease %s ended by %d committed writes %v", id, len(ended[id]), ended[id])
		}
	}
	load.mu.Lock()
	for id, h := range load.grants {
		s, ok := spans[id]
		switch {
		case !ok:
			report("lease %s granted to a client never was a holder", id)
		case s.from != h.lease.FencingToken || s.proxy != h.lease.ProxyID:
			report("lease %s: reply says proxy %s token %d, committed on %s at %d", id, h.lease.ProxyID, h.lease.FencingToken, s.proxy, s.from)
		case h.ending == model.LeaseReleased && !slices.Equal(ended[id], []string{model.EventReleased}):
			report("lease %s: its release answered released, the commits say %v", id, ended[id])
		case h.ending != model.LeaseReleased && h.ending != model.LeaseExpired:
			report("lease %s: its release answered %q", id, h.ending)
		}
	}
	orphans := len(spans) - len(load.grants)
	load.mu.Unlock()

	// Every owed event stored once (the relay may still be publishing).
	var missing []string
	for start := time.Now(); ; {
		evs, err := streamaudit.ReadAll(ctx, js, events.StreamName)
		if errors.Is(err, nats.ErrNoResponders) && time.Since(start) < 20*time.Second {
			// A node restarted moments ago may not serve the stream yet.
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		stored, err := streamaudit.EventIDs(evs, "pharox.events.")
		if err != nil {
			t.Fatal(err)
		}
		if missing = owed.Unpublished(stored); len(missing) == 0 || time.Since(start) > 20*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("%d events of committed writes not in %s, e.g. %v", len(missing), events.StreamName, missing[:min(5, len(missing))])
	}
	// Every ending has its record.
	leases, err := js.KeyValue(ctx, kvstore.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	for id, status := range owed.Endings {
		e, err := leases.Get(ctx, id)
		// As above: a direct get no node serves yet, or one a replica still
		// catching up after the restart answers without the record; a
		// record that is not there stays missing and is reported.
		for start := time.Now(); (errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrKeyNotFound)) && time.Since(start) < 20*time.Second; {
			time.Sleep(200 * time.Millisecond)
			e, err = leases.Get(ctx, id)
		}
		if err != nil {
			report("ending record of lease %s: %v", id, err)
			continue
		}
		var l model.Lease
		if err := json.Unmarshal(e.Value(), &l); err != nil || l.Status != status {
			report("ending record of lease %s: %s, want status %s", id, e.Value(), status)
		}
	}
	t.Logf("audited %d revisions: %d leases (%d never told to a client, ended by expiry), %d committed writes owing %d events, all stored once",
		w.total, len(spans), orphans, owed.Writes, len(owed.Events))
}

// lagWatch is a bucket watch of the proxies bucket that measures how long
// after a write is stored it is delivered.
type lagWatch struct {
	mu  sync.Mutex
	max time.Duration
}

func (lw *lagWatch) start(t *testing.T, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	stop, err := kvstore.WatchBucket(ctx, nc, kvstore.ProxiesBucket, func(e kvstore.Entry) {
		d := time.Since(e.Created)
		lw.mu.Lock()
		lw.max = max(lw.max, d)
		lw.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

func (lw *lagWatch) worst() time.Duration {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.max
}

// watchPlacement says how many of the proxies stream's ephemeral consumers
// (the bucket watches) live on node.
func watchPlacement(ctx context.Context, js jetstream.JetStream, node string) string {
	s, err := js.Stream(ctx, kvstore.ProxiesStream)
	if err != nil {
		return err.Error()
	}
	on, all := 0, 0
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		if ci.Config.Durable != "" {
			continue
		}
		all++
		if ci.Cluster != nil && ci.Cluster.Leader == node {
			on++
		}
	}
	return fmt.Sprintf("%d of the %d bucket watches live on %s", on, all, node)
}
