package manager_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// The invariant under load: two workers in one process, each on its own
// NATS connection, share a pool of 5 proxies with max_concurrency 2 while 50
// goroutines acquire, hold for 0-5 ms and release in a loop.
//
// What is checked, and why it is sound:
//
//   - Server-side truth. A lease is held exactly while its holder is in the
//     proxy's KV record: the revision-checked write that adds the holder
//     commits the lease, the one that removes it commits the release. The
//     test watches the PHAROX_PROXIES bucket and sees every committed
//     revision (it asserts the stream sequences it saw have no gap, so no
//     state went unchecked), and asserts that no revision ever holds more
//     than max_concurrency holders. In revision space (the KV stream's
//     sequence is the commit order) it also rebuilds each lease's interval
//     [fencing_token, revision that removed its holder) and counts overlaps
//     at every acquire: exact, neither over- nor under-approximated.
//   - Client-side view. Each goroutine counts itself on a proxy from the
//     acquire reply until just before it sends the release. That interval is
//     causally inside the committed one, so a count above the limit is a
//     real over-lease (the check cannot fail falsely, though it can miss).
//   - The worker-clock timestamps acquired_at/released_at are not used for
//     the assertion: acquired_at is taken before the committing write and
//     released_at after the releasing write (and after the lease record is
//     rewritten), so those intervals over-approximate and may overlap by
//     microseconds without any over-lease. Their overlap is only logged.
//
// Then every granted lease was released exactly once (reply status
// released, one released event, its holder removed once), no phantom holder
// exists, events match grants, and current_leases/total_leases end at 0.

const (
	invPool       = "invariant"
	invProxies    = 5
	invMaxConc    = 2
	invGoroutines = 50
	invClients    = 10
	// The load runs for invLoad, longer (up to invLoadMax) until
	// invTargetGrants leases were granted, and never past invIterCap
	// iterations per goroutine. Under -race on a small shared machine a
	// lease cycle costs tens of milliseconds (an idle 2-CPU box reaches
	// the target), so the floor asserted is invMinGrants: every slot of
	// the pool turned over 10 times under 50 contenders.
	invLoad         = 3 * time.Second
	invLoadMax      = 5 * time.Second
	invIterCap      = 1000
	invTargetGrants = 500
	invMinGrants    = 100
)

// invOps is how the load reaches the workers: over NATS or the Go API.
type invOps struct {
	acquire func(ctx context.Context, g int, r *rand.Rand, consumer string) (*model.Lease, *model.Proxy, error)
	release func(ctx context.Context, g int, r *rand.Rand, leaseID, consumer string) (model.Lease, error)
}

// invGrant is one lease handed to a goroutine and what its release said.
type invGrant struct {
	lease      model.Lease
	proxyID    string
	released   model.Lease
	releaseErr error
}

// invEnv is the assembled system under test.
type invEnv struct {
	admin   *nats.Conn
	js      jetstream.JetStream
	workers []*workertest.Worker
	proxies []model.Proxy
	watch   *proxyWatch
	events  *eventLog
	clients []*nats.Conn
	target  invTarget
	// disrupt, when set, runs beside the load (given the count of leases
	// granted so far); the load goes on until it returns.
	disrupt func(granted *atomic.Int64)
}

func TestInvariantUnderLoadNATS(t *testing.T) {
	env := startInvariantEnv(t)
	runInvariant(t, env, invOpsNATS(env))
}

// invOpsNATS reaches the workers with NATS requests from env's clients.
func invOpsNATS(env *invEnv) invOps {
	return invOps{
		acquire: func(ctx context.Context, g int, _ *rand.Rand, consumer string) (*model.Lease, *model.Proxy, error) {
			var reply model.AcquireReply
			raw, err := natsCall(ctx, env.clients[g%len(env.clients)], "pharox.acquire",
				model.AcquireRequest{PoolName: invPool, ConsumerName: &consumer}, &reply)
			if err != nil {
				return nil, nil, err
			}
			if (reply.Lease == nil) != (reply.Proxy == nil) {
				return nil, nil, fmt.Errorf("acquire reply with only one of lease and proxy: %s", raw)
			}
			if reply.Lease == nil && !strings.Contains(string(raw), `"lease":null`) {
				return nil, nil, fmt.Errorf("no-lease reply without \"lease\":null: %s", raw)
			}
			return reply.Lease, reply.Proxy, nil
		},
		release: func(ctx context.Context, g int, _ *rand.Rand, leaseID, consumer string) (model.Lease, error) {
			var reply model.LeaseReply
			_, err := natsCall(ctx, env.clients[g%len(env.clients)], "pharox.release",
				model.ReleaseRequest{LeaseID: leaseID, ConsumerName: &consumer}, &reply)
			if err != nil {
				return model.Lease{}, err
			}
			if reply.Lease == nil {
				return model.Lease{}, fmt.Errorf("release reply without a lease")
			}
			return *reply.Lease, nil
		},
	}
}

func TestInvariantUnderLoadGoAPI(t *testing.T) {
	env := startInvariantEnv(t)
	// Acquire and release each go to a worker picked at random, so about
	// half the releases are served by the worker that did not grant.
	ops := invOps{
		acquire: func(ctx context.Context, _ int, r *rand.Rand, consumer string) (*model.Lease, *model.Proxy, error) {
			m := env.workers[r.IntN(len(env.workers))].Manager
			return m.AcquireProxy(ctx, model.AcquireRequest{PoolName: invPool, ConsumerName: &consumer})
		},
		release: func(ctx context.Context, _ int, r *rand.Rand, leaseID, consumer string) (model.Lease, error) {
			m := env.workers[r.IntN(len(env.workers))].Manager
			return m.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: leaseID, ConsumerName: &consumer})
		},
	}
	runInvariant(t, env, ops)
}

// invTarget is the NATS the invariant test runs on: how to connect to it
// and the replicas of the buckets and stream.
type invTarget struct {
	connect  func() *nats.Conn
	replicas int
	// goroutines (default invGoroutines) make the load, each request
	// waiting up to clientTimeout (default 10 s) for workers that give
	// each request requestTimeout (the worker's default when zero).
	goroutines                    int
	clientTimeout, requestTimeout time.Duration
	// liveRepeats: a publish may be sent again (its acknowledgement lost
	// in a leader change); the stream stores it once (its Nats-Msg-Id),
	// but live subscribers get every copy, so live counts are at least,
	// not exactly, one per event.
	liveRepeats bool
}

// oneServer is a single embedded server, R1.
func oneServer(t *testing.T) invTarget {
	srv := natstest.RunServer(t)
	return invTarget{connect: func() *nats.Conn { return natstest.Connect(t, srv) }, replicas: 1}
}

func startInvariantEnv(t *testing.T) *invEnv { return startInvariantEnvOn(t, oneServer(t)) }

func startInvariantEnvOn(t *testing.T, target invTarget) *invEnv {
	t.Helper()
	if target.goroutines == 0 {
		target.goroutines = invGoroutines
	}
	if target.clientTimeout == 0 {
		target.clientTimeout = 10 * time.Second
	}
	env := &invEnv{admin: target.connect(), target: target}
	js, err := jetstream.New(env.admin)
	if err != nil {
		t.Fatal(err)
	}
	env.js = js
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The proxies bucket is created here as kvstore.Open would, except that
	// it keeps 64 revisions per key instead of 1, so that the test's watcher
	// cannot lose a revision superseded before it was delivered. Workers
	// bind to an existing bucket as they find it; history changes nothing
	// they read or write (CAS is on the last revision of the key).
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: kvstore.ProxiesBucket, Description: "pharox proxies and their active leases",
		History: 64, Storage: jetstream.FileStorage, Replicas: target.replicas,
	}); err != nil {
		t.Fatalf("create proxies bucket: %v", err)
	}
	env.watch = startProxyWatch(t, ctx, js, target.replicas)
	env.events = startEventLog(t, target.connect())

	for i := 0; i < 2; i++ {
		env.workers = append(env.workers, workertest.Start(t, target.connect(), workertest.Config{Replicas: target.replicas, RequestTimeout: target.requestTimeout}))
	}
	if kv, err := js.KeyValue(ctx, kvstore.ProxiesBucket); err != nil {
		t.Fatal(err)
	} else if st, err := kv.Status(ctx); err != nil {
		t.Fatal(err)
	} else if st.History() != 64 {
		t.Fatalf("the workers changed the proxies bucket the test made (history %d, not 64): the watcher could miss revisions", st.History())
	}
	m := env.workers[0].Manager
	if _, err := m.CreatePool(ctx, model.PoolCreateRequest{Name: invPool}); err != nil {
		t.Fatal(err)
	}
	limit := invMaxConc
	in := make([]model.ProxyInput, invProxies)
	for i := range in {
		in[i] = model.ProxyInput{Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080, MaxConcurrency: &limit}
	}
	env.proxies, err = m.AddProxies(ctx, model.ProxiesAddRequest{PoolName: invPool, Proxies: in})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < invClients; i++ {
		env.clients = append(env.clients, target.connect())
	}
	return env
}

func runInvariant(t *testing.T, env *invEnv, ops invOps) {
	start := time.Now()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	live := map[string]*atomic.Int32{}
	for _, p := range env.proxies {
		live[p.ID] = new(atomic.Int32)
	}
	var clientViolations atomic.Int64
	var clientViolationMsg atomic.Value

	goroutines := env.target.goroutines
	grants := make([][]invGrant, goroutines)
	nulls := make([]int, goroutines)
	errs := make([][]error, goroutines)
	iters := make([]int, goroutines)

	var granted atomic.Int64
	minEnd, maxEnd := start.Add(invLoad), start.Add(invLoadMax)
	disrupted := make(chan struct{})
	if env.disrupt != nil {
		go func() {
			defer close(disrupted)
			env.disrupt(&granted)
		}()
	} else {
		close(disrupted)
	}
	running := func() bool {
		select {
		case <-disrupted:
		default:
			return true
		}
		now := time.Now()
		return now.Before(minEnd) || (now.Before(maxEnd) && granted.Load() < invTargetGrants)
	}
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			consumer := fmt.Sprintf("load-%02d", g)
			for i := 0; i < invIterCap && running(); i++ {
				iters[g]++
				ctx, cancel := context.WithTimeout(context.Background(), env.target.clientTimeout)
				lease, proxy, err := ops.acquire(ctx, g, r, consumer)
				cancel()
				if err != nil {
					errs[g] = append(errs[g], fmt.Errorf("acquire: %w", err))
					continue
				}
				if lease == nil {
					nulls[g]++
					time.Sleep(time.Duration(1000+r.IntN(2000)) * time.Microsecond)
					continue
				}
				granted.Add(1)
				gr := invGrant{lease: *lease, proxyID: proxy.ID}
				counter := live[lease.ProxyID]
				if counter == nil || proxy.ID != lease.ProxyID || lease.ConsumerName != consumer || lease.Status != model.LeaseActive {
					errs[g] = append(errs[g], fmt.Errorf("acquire returned an odd lease %+v on proxy %s", *lease, proxy.ID))
					counter = new(atomic.Int32)
				}
				if n := counter.Add(1); n > invMaxConc {
					clientViolations.Add(1)
					clientViolationMsg.Store(fmt.Sprintf("proxy %s held by %d clients at once (lease %s)", lease.ProxyID, n, lease.ID))
				}
				time.Sleep(time.Duration(r.IntN(5001)) * time.Microsecond)
				counter.Add(-1)
				ctx, cancel = context.WithTimeout(context.Background(), env.target.clientTimeout)
				gr.released, gr.releaseErr = ops.release(ctx, g, r, lease.ID, consumer)
				cancel()
				grants[g] = append(grants[g], gr)
			}
		}()
	}
	wg.Wait()
	loadTook := time.Since(start)

	var all []invGrant
	totalNulls, totalIters := 0, 0
	var allErrs []error
	for g := range grants {
		all = append(all, grants[g]...)
		totalNulls += nulls[g]
		totalIters += iters[g]
		allErrs = append(allErrs, errs[g]...)
	}
	var conflicts, managerGranted, managerEmpty uint64
	for _, w := range env.workers {
		c := w.Manager.Counters()
		conflicts += c.Conflicts
		managerGranted += c.Granted
		managerEmpty += c.Empty
	}
	t.Logf("load ran %v: %d iterations, %d leases granted, %d acquires answered lease null, %d errors, %d CAS conflicts retried (managers counted %d granted, %d empty)",
		loadTook.Round(time.Millisecond), totalIters, len(all), totalNulls, len(allErrs), conflicts, managerGranted, managerEmpty)

	if managerGranted != uint64(len(all)) || managerEmpty != uint64(totalNulls) {
		t.Errorf("managers counted %d granted and %d empty; clients saw %d and %d", managerGranted, managerEmpty, len(all), totalNulls)
	}
	if n := clientViolations.Load(); n > 0 {
		t.Errorf("client view: %d times more than %d clients held a proxy at once; last: %v", n, invMaxConc, clientViolationMsg.Load())
	}
	for i, err := range allErrs {
		if i == 5 {
			t.Errorf("... and %d more errors", len(allErrs)-5)
			break
		}
		t.Errorf("request failed under load: %v", err)
	}
	if len(all) < invMinGrants {
		t.Errorf("only %d leases granted; want at least %d for the load to mean something", len(all), invMinGrants)
	} else if len(all) < invTargetGrants {
		t.Logf("note: %d leases granted, short of the %d aimed at (slow or busy machine)", len(all), invTargetGrants)
	}
	if totalNulls == 0 {
		t.Logf("no acquire found the pool full (expected some with %d goroutines on %d slots)", goroutines, invProxies*invMaxConc)
	}

	// Let both workers' events and the watcher catch up.
	ctx, cancel := context.WithTimeout(context.Background(), 3*env.target.clientTimeout)
	defer cancel()
	for _, w := range env.workers {
		if err := w.Events.Flush(ctx); err != nil {
			t.Errorf("flush events: %v", err)
		}
	}
	env.watch.waitCaughtUp(t, ctx, env.js)
	env.events.waitFor(ctx, 3*time.Second, map[string]int{
		model.EventAcquired: len(all), model.EventReleased: len(all), model.EventAcquireFailed: totalNulls})

	checkReleases(t, all)
	checkCommittedStates(t, env.watch, all)
	logClockOverlap(t, all)
	checkEvents(t, ctx, env, all, totalNulls)
	checkFinalState(t, ctx, env)
	t.Logf("whole check took %v", time.Since(start).Round(time.Millisecond))
}

// checkReleases: each granted lease was released once, by its own request,
// which answered released.
func checkReleases(t *testing.T, all []invGrant) {
	t.Helper()
	ids := map[string]bool{}
	tokens := map[string]map[uint64]string{}
	bad := 0
	for _, g := range all {
		l := g.lease
		if ids[l.ID] {
			t.Errorf("lease %s granted twice", l.ID)
		}
		ids[l.ID] = true
		if tokens[l.ProxyID] == nil {
			tokens[l.ProxyID] = map[uint64]string{}
		}
		if other, dup := tokens[l.ProxyID][l.FencingToken]; dup {
			t.Errorf("leases %s and %s on proxy %s share fencing token %d", other, l.ID, l.ProxyID, l.FencingToken)
		}
		tokens[l.ProxyID][l.FencingToken] = l.ID
		switch {
		case g.releaseErr != nil:
			bad++
			if bad <= 5 {
				t.Errorf("release of lease %s failed: %v", l.ID, g.releaseErr)
			}
		case g.released.ID != l.ID || g.released.Status != model.LeaseReleased || g.released.ReleasedAt == nil:
			bad++
			if bad <= 5 {
				t.Errorf("release of lease %s answered %+v; want it released with released_at", l.ID, g.released)
			}
		case g.released.ReleasedAt.Before(l.AcquiredAt):
			t.Errorf("lease %s released_at %v before acquired_at %v", l.ID, *g.released.ReleasedAt, l.AcquiredAt)
		}
	}
	if bad > 5 {
		t.Errorf("%d releases in all did not answer released", bad)
	}
}

// checkCommittedStates walks every committed revision of every proxy record.
func checkCommittedStates(t *testing.T, w *proxyWatch, all []invGrant) {
	t.Helper()
	if len(w.gaps) > 0 {
		t.Errorf("the watcher missed stream sequences %v: some committed states went unchecked", w.gaps)
	}
	type span struct{ from, to uint64 } // [revision that added the holder, revision that removed it)
	spans := map[string]*span{}
	owner := map[string]string{} // lease -> proxy
	overfull, maxSeen := 0, 0
	for proxyID, revs := range w.revs {
		prev := map[string]bool{}
		for _, rv := range revs {
			if len(rv.holders) > maxSeen {
				maxSeen = len(rv.holders)
			}
			if len(rv.holders) > invMaxConc {
				overfull++
				if overfull <= 5 {
					t.Errorf("OVER-LEASE: proxy %s revision %d holds %d leases %v; max_concurrency is %d", proxyID, rv.rev, len(rv.holders), rv.holders, invMaxConc)
				}
			}
			cur := map[string]bool{}
			for _, id := range rv.holders {
				if cur[id] {
					t.Errorf("proxy %s revision %d lists lease %s twice", proxyID, rv.rev, id)
				}
				cur[id] = true
				if !prev[id] {
					if s, ok := spans[id]; ok {
						t.Errorf("lease %s came back on proxy %s at revision %d after leaving it at %d", id, proxyID, rv.rev, s.to)
						continue
					}
					spans[id] = &span{from: rv.rev}
					owner[id] = proxyID
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
	if overfull > 5 {
		t.Errorf("OVER-LEASE: %d committed revisions in all held more than %d leases", overfull, invMaxConc)
	}

	granted := map[string]invGrant{}
	for _, g := range all {
		granted[g.lease.ID] = g
	}
	missing, leaked, mismatched := 0, 0, 0
	for _, g := range all {
		s, ok := spans[g.lease.ID]
		switch {
		case !ok:
			missing++
			if missing <= 5 {
				t.Errorf("granted lease %s (token %d) never appeared in proxy %s's committed records", g.lease.ID, g.lease.FencingToken, g.lease.ProxyID)
			}
		case owner[g.lease.ID] != g.lease.ProxyID || s.from != g.lease.FencingToken:
			mismatched++
			if mismatched <= 5 {
				t.Errorf("lease %s: committed on proxy %s at revision %d, but its reply says proxy %s, fencing token %d",
					g.lease.ID, owner[g.lease.ID], s.from, g.lease.ProxyID, g.lease.FencingToken)
			}
		case s.to == 0:
			leaked++
			if leaked <= 5 {
				t.Errorf("LOST RELEASE: lease %s (proxy %s, token %d) was released (reply %s) but its holder is still in the proxy record",
					g.lease.ID, g.lease.ProxyID, g.lease.FencingToken, g.released.Status)
			}
		}
	}
	if missing+leaked+mismatched > 5 {
		t.Errorf("in all: %d granted leases never committed, %d mismatched, %d releases that left their holder behind", missing, mismatched, leaked)
	}
	phantoms := 0
	for id := range spans {
		if _, ok := granted[id]; !ok {
			phantoms++
			if phantoms <= 5 {
				t.Errorf("proxy %s had holder %s that no client was granted", owner[id], id)
			}
		}
	}

	// The same in interval form: at every acquire (in commit order) count
	// the leases of that proxy whose [from, to) covers it.
	byProxy := map[string][]*span{}
	for id, s := range spans {
		byProxy[owner[id]] = append(byProxy[owner[id]], s)
	}
	worst := 0
	for proxyID, ss := range byProxy {
		sort.Slice(ss, func(i, j int) bool { return ss[i].from < ss[j].from })
		for i, s := range ss {
			n := 0
			for _, o := range ss[:i+1] {
				if o.from <= s.from && (o.to == 0 || s.from < o.to) {
					n++
				}
			}
			worst = max(worst, n)
			if n > invMaxConc {
				t.Errorf("OVER-LEASE: at revision %d proxy %s had %d overlapping leases", s.from, proxyID, n)
				break
			}
		}
	}
	t.Logf("watched %d committed proxy revisions; most holders in one revision %d; most overlapping leases at an acquire %d", w.total, maxSeen, worst)
}

// logClockOverlap reports how often the worker-clock intervals
// [acquired_at, released_at) overlap more than the limit. They over-
// approximate the held interval, so this is a diagnostic, not a check.
func logClockOverlap(t *testing.T, all []invGrant) {
	t.Helper()
	type iv struct{ from, to time.Time }
	byProxy := map[string][]iv{}
	for _, g := range all {
		if g.released.ReleasedAt != nil {
			byProxy[g.lease.ProxyID] = append(byProxy[g.lease.ProxyID], iv{g.lease.AcquiredAt, *g.released.ReleasedAt})
		}
	}
	over, worst := 0, 0
	var slack time.Duration
	for _, ivs := range byProxy {
		sort.Slice(ivs, func(i, j int) bool { return ivs[i].from.Before(ivs[j].from) })
		for i, x := range ivs {
			n := 0
			var earliestEnd time.Time
			for _, o := range ivs[:i+1] {
				if !o.from.After(x.from) && x.from.Before(o.to) {
					n++
					if earliestEnd.IsZero() || o.to.Before(earliestEnd) {
						earliestEnd = o.to
					}
				}
			}
			worst = max(worst, n)
			if n > invMaxConc {
				over++
				slack = max(slack, earliestEnd.Sub(x.from))
			}
		}
	}
	t.Logf("worker-clock intervals: most overlapping at an acquired_at instant %d; %d instants above %d (largest overlap %v; expected from stamping, not an over-lease)",
		worst, over, invMaxConc, slack)
}

// checkEvents compares the events seen live and those stored in
// PHAROX_EVENTS with the grants.
func checkEvents(t *testing.T, ctx context.Context, env *invEnv, all []invGrant, nulls int) {
	t.Helper()
	want := map[string]int{model.EventAcquired: len(all), model.EventReleased: len(all), model.EventAcquireFailed: nulls}
	got := env.events.snapshot()
	exact := !env.target.liveRepeats
	for name, n := range want {
		if got[name] < n || exact && got[name] != n {
			t.Errorf("live events: %d %s, want %d", got[name], name, n)
		}
	}
	for name, n := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("live events: %d unexpected %s", n, name)
		}
	}
	env.events.mu.Lock()
	for _, g := range all {
		id := g.lease.ID
		if n := env.events.acquired[id]; n < 1 || exact && n != 1 {
			t.Errorf("lease %s has %d acquired events, want 1", id, n)
		}
		if n := env.events.released[id]; n < 1 || exact && n != 1 {
			t.Errorf("lease %s has %d released events, want 1", id, n)
		}
	}
	env.events.mu.Unlock()

	info := streamInfo(t, ctx, env.js, "PHAROX_EVENTS", jetstream.WithSubjectFilter("pharox.events.>"))
	for name, n := range want {
		if s := info.State.Subjects["pharox.events."+name]; s != uint64(n) {
			t.Errorf("PHAROX_EVENTS holds %d %s events, want %d", s, name, n)
		}
	}
	t.Logf("events: %d acquired, %d acquire_failed, %d released", got[model.EventAcquired], got[model.EventAcquireFailed], got[model.EventReleased])
}

// checkFinalState: nothing is held any more, as every worker reads it.
func checkFinalState(t *testing.T, ctx context.Context, env *invEnv) {
	t.Helper()
	var page model.ProxiesPage
	if _, err := natsCall(ctx, env.admin, "pharox.admin.proxies.list", model.ProxiesListRequest{PoolName: invPool}, &page); err != nil {
		t.Fatalf("proxies.list: %v", err)
	}
	if len(page.Proxies) != invProxies {
		t.Errorf("proxies.list returned %d proxies, want %d", len(page.Proxies), invProxies)
	}
	for _, p := range page.Proxies {
		if p.CurrentLeases != 0 {
			t.Errorf("proxy %s ends with current_leases %d, want 0", p.ID, p.CurrentLeases)
		}
	}
	for i, w := range env.workers {
		st, err := w.Manager.PoolStats(ctx, invPool)
		if err != nil {
			t.Fatalf("worker %d stats: %v", i, err)
		}
		if st.TotalLeases != 0 || st.LeasedProxies != 0 || st.AvailableProxies != invProxies {
			t.Errorf("worker %d stats at the end: %+v; want no leases and all %d proxies available", i, st, invProxies)
		}
	}
	var st model.PoolStatsSnapshot
	if _, err := natsCall(ctx, env.admin, "pharox.stats", model.StatsRequest{PoolName: invPool}, &st); err != nil {
		t.Fatalf("stats: %v", err)
	}
	if st.TotalLeases != 0 {
		t.Errorf("pharox.stats total_leases ends at %d, want 0", st.TotalLeases)
	}
}

// natsCall makes a request and decodes its reply; a micro error reply is
// an error carrying the code and body.
func natsCall(ctx context.Context, nc *nats.Conn, subject string, req, reply any) ([]byte, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return msg.Data, fmt.Errorf("%s: %s: %s", subject, code, msg.Data)
	}
	if err := json.Unmarshal(msg.Data, reply); err != nil {
		return msg.Data, fmt.Errorf("%s: decode %s: %w", subject, msg.Data, err)
	}
	return msg.Data, nil
}

// eventLog collects the events published on pharox.events.>.
type eventLog struct {
	nc       *nats.Conn
	mu       sync.Mutex
	barriers []string
	counts   map[string]int
	acquired map[string]int // lease id -> acquired events
	released map[string]int // lease id -> released events
	bad      []string
}

func startEventLog(t *testing.T, nc *nats.Conn) *eventLog {
	t.Helper()
	el := &eventLog{counts: map[string]int{}, acquired: map[string]int{}, released: map[string]int{}}
	el.nc = nc
	sub, err := nc.Subscribe("pharox.events.>", func(msg *nats.Msg) {
		name := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		if name == barrierEvent {
			el.mu.Lock()
			el.barriers = append(el.barriers, string(msg.Data))
			el.mu.Unlock()
			return
		}
		var ev struct {
			Lease *model.Lease `json:"lease"`
		}
		err := json.Unmarshal(msg.Data, &ev)
		el.mu.Lock()
		defer el.mu.Unlock()
		el.counts[name]++
		if err != nil {
			el.bad = append(el.bad, fmt.Sprintf("%s: %v", msg.Subject, err))
			return
		}
		switch name {
		case model.EventAcquired:
			if ev.Lease == nil {
				el.bad = append(el.bad, "acquired event without a lease")
				return
			}
			el.acquired[ev.Lease.ID]++
		case model.EventAcquireFailed:
			if ev.Lease != nil {
				el.bad = append(el.bad, "acquire_failed event with a lease")
			}
		case model.EventReleased:
			if ev.Lease == nil || ev.Lease.Status != model.LeaseReleased {
				el.bad = append(el.bad, fmt.Sprintf("released event with lease %+v", ev.Lease))
				return
			}
			el.released[ev.Lease.ID]++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		el.mu.Lock()
		defer el.mu.Unlock()
		for _, b := range el.bad {
			t.Errorf("malformed event: %s", b)
		}
	})
	return el
}

// barrierEvent is the subject token of the test's own marker on the events
// subjects (never a worker's).
const barrierEvent = "zz_test_barrier"

// waitFor waits until at least want of each event arrived, or for at most
// limit. The workers' publishers are flushed first, so every event was in
// the server before the marker this publishes after it: once the log has
// the marker, it has every event there is (extra ones included).
func (el *eventLog) waitFor(ctx context.Context, limit time.Duration, want map[string]int) {
	end := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(end) {
		got := el.snapshot()
		done := true
		for k, v := range want {
			done = done && got[k] >= v
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling counts: what is still missing has no event of its own
	}
	marker := nuid.Next()
	_ = el.nc.Publish("pharox.events."+barrierEvent, []byte(marker))
	for ctx.Err() == nil {
		el.mu.Lock()
		seen := slices.Contains(el.barriers, marker)
		el.mu.Unlock()
		if seen {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (el *eventLog) snapshot() map[string]int {
	el.mu.Lock()
	defer el.mu.Unlock()
	out := make(map[string]int, len(el.counts))
	for k, v := range el.counts {
		out[k] = v
	}
	return out
}

// A release served by a worker whose replica has not seen the acquire yet
// must never answer "released" without freeing the slot. An active lease
// lives only in its proxy's record, so that worker finds it by catching its
// replica up with every acknowledged write first. Here the second store's
// replica is frozen (Close stops its watch; its KV handles keep working), a
// watch lagging without end: the release must fail with 503, change
// nothing and publish nothing, and the lease must stay releasable where
// the replica is current.
func TestReleaseOnLaggingReplicaFreesTheSlot(t *testing.T) {
	srv := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := workertest.Start(t, natstest.Connect(t, srv), workertest.Config{})
	if _, err := w.Manager.CreatePool(ctx, model.PoolCreateRequest{Name: "lag"}); err != nil {
		t.Fatal(err)
	}
	px, err := w.Manager.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "lag", Proxies: []model.ProxyInput{{Host: "10.5.0.1", Port: 80, MaxConcurrency: ptr(1)}}})
	if err != nil {
		t.Fatal(err)
	}
	m2 := openManager(t, ctx, srv)
	m2.Close() // the replica keeps the proxy as it was: no holder
	var released []model.ReleaseEvent
	m2.RegisterReleaseCallback(func(ev model.ReleaseEvent) { released = append(released, ev) })

	for round := 0; round < 2; round++ {
		lease, _, err := w.Manager.AcquireProxy(ctx, model.AcquireRequest{PoolName: "lag"})
		if err != nil || lease == nil {
			t.Fatalf("round %d: acquire: %v, %v (slot not given back by the previous release?)", round, lease, err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		got, err := m2.ReleaseProxy(rctx, model.ReleaseRequest{LeaseID: lease.ID})
		rcancel()
		if !errors.Is(err, model.ErrUnavailable) {
			t.Fatalf("round %d: release on the frozen replica: %+v, %v; want 503 unavailable", round, got, err)
		}
		p, err := w.Manager.GetProxy(ctx, px[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if p.CurrentLeases != 1 {
			t.Fatalf("round %d: the failed release changed current_leases to %d", round, p.CurrentLeases)
		}
		if len(released) != 0 {
			t.Fatalf("round %d: the failed release published %d events", round, len(released))
		}
		if got, err := w.Manager.GetLease(ctx, lease.ID); err != nil || got.Status != model.LeaseActive {
			t.Fatalf("round %d: lease after the failed release: %+v, %v", round, got, err)
		}
		got, err = w.Manager.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		if err != nil || got.Status != model.LeaseReleased {
			t.Fatalf("round %d: release on the current worker: %+v, %v", round, got, err)
		}
	}
}
