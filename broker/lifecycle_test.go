package broker_test

// Tests of the lease lifecycle beyond pharox (issue 4): renew, waiting for a
// free proxy, idempotent acquire, expiry sweeps, bounded lease history and
// the expiry grace. Everything goes through NATS requests to real workers on
// embedded servers. Times come from the injectable clock where the behaviour
// allows it; where real time is the point (waits, sweeps, KV max age) the
// margins are generous and every measured value is logged.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// --- helpers of this file -----------------------------------------------------

// timedReply is one request's outcome with the moments it was sent and
// answered, for tests that time replies.
type timedReply struct {
	sent, got time.Time
	msg       *nats.Msg
	err       error
}

func (r timedReply) took() time.Duration { return r.got.Sub(r.sent) }

// timedRequest sends data to subject and waits for the reply. It never calls
// require, so it may run on any goroutine.
func timedRequest(nc *nats.Conn, subject string, data []byte, timeout time.Duration) timedReply {
	r := timedReply{sent: time.Now()}
	r.msg, r.err = nc.Request(subject, data, timeout)
	r.got = time.Now()
	return r
}

// acquireOutcome decodes a timed acquire reply: the lease (nil for "none
// free") or why the reply is not a successful acquire reply.
func acquireOutcome(r timedReply) (*model.AcquireReply, error) {
	if r.err != nil {
		return nil, r.err
	}
	if code := r.msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		return nil, fmt.Errorf("error reply %s: %s", code, r.msg.Data)
	}
	var rep model.AcquireReply
	if err := json.Unmarshal(r.msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("reply %s: %w", r.msg.Data, err)
	}
	return &rep, nil
}

// requireAcquireReply checks a timed acquire reply against the contract and
// returns its lease (nil for "none free").
func requireAcquireReply(t testing.TB, e *env, r timedReply, what string) *model.Lease {
	t.Helper()
	rep, err := acquireOutcome(r)
	require.NoError(t, err, what)
	_, repName := reqSchema(t, "acquire")
	require.NoError(t, e.sch.Validate(repName, r.msg.Data), "%s: %s", what, r.msg.Data)
	require.Equal(t, rep.Lease == nil, rep.Proxy == nil, "%s: lease and proxy are both set or both null: %s", what, r.msg.Data)
	return rep.Lease
}

// jsonKeys returns the top-level keys of a JSON object, sorted.
func jsonKeys(t testing.TB, doc []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &m), "%s", doc)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func jsonField(t testing.TB, doc []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &m), "%s", doc)
	v, ok := m[key]
	require.True(t, ok, "no key %q in %s", key, doc)
	return v
}

func requireSameTime(t testing.TB, want, got time.Time, msgAndArgs ...any) {
	t.Helper()
	require.True(t, want.Equal(got), append([]any{"want %s, got %s", want.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano)}, msgAndArgs...)...)
}

// newQuietEnv is newEnv without the event capture and its end-of-test
// checks, for tests that make tens of thousands of events and are not about
// them. The workers use the real clock.
func newQuietEnv(t testing.TB, n int, cfg workertest.Config) *env {
	t.Helper()
	e := newServerEnv(t)
	for i := 0; i < n; i++ {
		e.workers = append(e.workers, startWorker(t, e.srv, cfg))
	}
	return e
}

// prefixed sends a request to another subject prefix and requires success.
func (e *env) prefixed(prefix, op string, req any, out any) []byte {
	e.t.Helper()
	data := body(e.t, req)
	msg, err := e.nc.Request(prefix+"."+op, data, requestTimeout)
	require.NoError(e.t, err, "request %s.%s", prefix, op)
	require.Empty(e.t, msg.Header.Get(micro.ErrorCodeHeader), "%s.%s %s failed: %s", prefix, op, data, msg.Data)
	_, repName := reqSchema(e.t, op)
	require.NoError(e.t, e.sch.Validate(repName, msg.Data), "reply of %s.%s: %s", prefix, op, msg.Data)
	if out != nil {
		require.NoError(e.t, json.Unmarshal(msg.Data, out))
	}
	return msg.Data
}

func (e *env) renew(req map[string]any) ([]byte, model.Lease) {
	e.t.Helper()
	raw := e.ok("renew", req)
	var rep model.LeaseReply
	require.NoError(e.t, json.Unmarshal(raw, &rep))
	require.NotNil(e.t, rep.Lease)
	return raw, *rep.Lease
}

func (e *env) cleanupCount() int {
	e.t.Helper()
	var rep model.CleanupReply
	e.okInto("cleanup", "{}", &rep)
	return rep.Released
}

// --- renew ------------------------------------------------------------------

func TestLifecycleRenew(t *testing.T) {
	// Two workers on one prefix share the fake clock; requests go to either.
	setup := func(t *testing.T) (*env, model.Proxy) {
		e := newEnv(t, envConfig{workers: 2})
		e.createPool("rn")
		px := e.addProxies("rn", map[string]any{"host": "10.1.0.1", "port": 3128, "max_concurrency": 1})[0]
		return e, px
	}

	t.Run("extends", func(t *testing.T) {
		e, px := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 30})

		e.clock.Advance(10 * time.Second)
		raw, r := e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 120, "consumer_name": "alice"})
		require.Equal(t, model.LeaseActive, r.Status)
		requireSameTime(t, e.clock.Now().Add(120*time.Second), r.ExpiresAt, "expires_at = now + duration")
		require.Equal(t, l.FencingToken, r.FencingToken, "renew keeps the fencing token")
		require.Equal(t, l.ID, r.ID)
		require.Equal(t, l.ProxyID, r.ProxyID)
		require.Equal(t, l.ConsumerID, r.ConsumerID)
		requireSameTime(t, l.AcquiredAt, r.AcquiredAt)
		require.Nil(t, r.ReleasedAt)
		require.JSONEq(t, string(jsonField(t, raw, "lease")), string(jsonField(t, e.ok("leases.get", map[string]any{"lease_id": l.ID}), "lease")),
			"leases.get shows the renewed lease")

		// Without consumer_name; a shorter duration sets an earlier expiry:
		// expires_at is now + duration, whatever it was.
		e.clock.Advance(5 * time.Second)
		_, r2 := e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 60})
		requireSameTime(t, e.clock.Now().Add(60*time.Second), r2.ExpiresAt)
		require.True(t, r2.ExpiresAt.Before(r.ExpiresAt))
		require.Equal(t, l.FencingToken, r2.FencingToken)
		requireSameTime(t, r2.ExpiresAt, e.getLease(l.ID).ExpiresAt)

		// Past the first expires_at the renewed lease still holds its
		// single slot, on every worker.
		e.clock.Advance(40 * time.Second)
		require.Equal(t, model.LeaseActive, e.getLease(l.ID).Status)
		for range e.workers {
			require.Nil(t, e.acquire(map[string]any{"pool_name": "rn", "consumer_name": "bob"}).Lease)
		}
		require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)
		require.Equal(t, counts{Total: 1, Active: 1, Available: 0, Leased: 1, Leases: 1}, countsOf(e.stats("rn")))
		require.Zero(t, e.cleanupCount())

		// Past the renewed expiry it is gone, and the next lease of the
		// proxy has a higher token.
		e.clock.Advance(21 * time.Second)
		require.Equal(t, model.LeaseExpired, e.getLease(l.ID).Status)
		requireSameTime(t, r2.ExpiresAt, *e.getLease(l.ID).ReleasedAt)
		next, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "bob"})
		require.Greater(t, next.FencingToken, l.FencingToken)
	})

	t.Run("refused after release", func(t *testing.T) {
		e, px := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 30})
		rel := e.release(l.ID)
		require.Equal(t, model.LeaseReleased, rel.Status)
		before := e.snapshot([]string{"rn"}, []string{l.ID})
		for _, req := range []map[string]any{
			{"lease_id": l.ID, "duration_seconds": 60},
			{"lease_id": l.ID, "duration_seconds": 60, "consumer_name": "alice"},
		} {
			det := e.failWellFormed("renew", req, 409, "lease_not_active")
			require.Contains(t, det.Message, "released")
		}
		require.Equal(t, before, e.snapshot([]string{"rn"}, []string{l.ID}), "a refused renew changes nothing")
		got := e.getLease(l.ID)
		require.Equal(t, model.LeaseReleased, got.Status)
		requireSameTime(t, l.ExpiresAt, got.ExpiresAt)
		require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)
		require.Empty(t, e.events(model.EventRenewed))
	})

	t.Run("refused after expiry", func(t *testing.T) {
		e, px := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 5})
		e.clock.Advance(5 * time.Second) // expires_at is not after now: expired
		// Not yet recorded by any sweep.
		det := e.failWellFormed("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60, "consumer_name": "alice"}, 409, "lease_not_active")
		require.Contains(t, det.Message, "expired")
		got := e.getLease(l.ID)
		require.Equal(t, model.LeaseExpired, got.Status)
		requireSameTime(t, l.ExpiresAt, got.ExpiresAt, "a refused renew does not extend")
		requireSameTime(t, l.ExpiresAt, *got.ReleasedAt)
		// The refused renew may have recorded the expiry (its write pruned
		// the holder); then cleanup finds nothing. One expired event either way.
		require.LessOrEqual(t, e.cleanupCount(), 1)
		require.Len(t, e.events(model.EventExpired), 1)
		det = e.failWellFormed("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60}, 409, "lease_not_active")
		require.Contains(t, det.Message, "expired")
		require.Equal(t, model.LeaseExpired, e.getLease(l.ID).Status)
		require.Equal(t, 0, e.getProxy(px.ID).CurrentLeases)
		require.Empty(t, e.events(model.EventRenewed))
		require.Len(t, e.events(model.EventExpired), 1)
	})

	t.Run("other consumer 403", func(t *testing.T) {
		e, _ := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 30})
		e.clock.Advance(time.Second)
		before := e.snapshot([]string{"rn"}, []string{l.ID})
		det := e.failWellFormed("renew", map[string]any{"lease_id": l.ID, "duration_seconds": 60, "consumer_name": "mallory"}, 403, "forbidden")
		require.Contains(t, det.Message, "mallory")
		require.Equal(t, before, e.snapshot([]string{"rn"}, []string{l.ID}), "a forbidden renew changes nothing")
		requireSameTime(t, l.ExpiresAt, e.getLease(l.ID).ExpiresAt)
		require.Empty(t, e.events(model.EventRenewed))
	})

	t.Run("unknown lease 404", func(t *testing.T) {
		e, _ := setup(t)
		id := uuid.NewString()
		det := e.failWellFormed("renew", map[string]any{"lease_id": id, "duration_seconds": 60}, 404, "lease_not_found")
		require.Contains(t, det.Message, id)
		e.failWellFormed("renew", map[string]any{"lease_id": id, "duration_seconds": 60, "consumer_name": "alice"}, 404, "lease_not_found")
	})

	t.Run("bad duration 400", func(t *testing.T) {
		e, _ := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 30})
		before := e.snapshot([]string{"rn"}, []string{l.ID})
		for _, tc := range []struct {
			name string
			body string
		}{
			{"zero", `{"lease_id":"` + l.ID + `","duration_seconds":0}`},
			{"over a day", `{"lease_id":"` + l.ID + `","duration_seconds":86401}`},
			{"missing", `{"lease_id":"` + l.ID + `"}`},
			{"negative", `{"lease_id":"` + l.ID + `","duration_seconds":-1}`},
			{"fraction", `{"lease_id":"` + l.ID + `","duration_seconds":1.5}`},
			{"null", `{"lease_id":"` + l.ID + `","duration_seconds":null}`},
		} {
			e.requireInvalidRequest("renew", []byte(tc.body))
			det := e.failRaw("renew", []byte(tc.body), 400, "bad_request")
			require.Contains(t, det.Message, "duration_seconds", tc.name)
		}
		require.Equal(t, before, e.snapshot([]string{"rn"}, []string{l.ID}), "a bad renew changes nothing")
		require.Empty(t, e.events(model.EventRenewed))
		// The bounds themselves are fine.
		_, r := e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 86400})
		requireSameTime(t, e.clock.Now().Add(86400*time.Second), r.ExpiresAt)
		_, r = e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 1})
		requireSameTime(t, e.clock.Now().Add(time.Second), r.ExpiresAt)
	})

	t.Run("renewed event", func(t *testing.T) {
		e, _ := setup(t)
		l, _ := e.mustAcquire(map[string]any{"pool_name": "rn", "consumer_name": "alice", "duration_seconds": 30})
		e.clock.Advance(3 * time.Second)
		raw1, r1 := e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 90, "consumer_name": "alice"})
		e.clock.Advance(4 * time.Second)
		raw2, r2 := e.renew(map[string]any{"lease_id": l.ID, "duration_seconds": 45})

		msgs := e.committedEvents(model.EventRenewed) // two workers: capture order is not request order
		require.Len(t, msgs, 2, "one renewed event per renew")
		for i, m := range msgs {
			require.Equal(t, "pharox.events.renewed", m.Subject)
			require.NoError(t, e.sch.Validate("event.renewed", m.Data), "%s", m.Data)
			require.Equal(t, []string{"lease", "pool_name", "previous_expires_at"}, jsonKeys(t, m.Data))
			require.NotEmpty(t, m.Header.Get(jetstream.MsgIDHeader))
			raw := []*[]byte{&raw1, &raw2}[i]
			require.JSONEq(t, string(jsonField(t, *raw, "lease")), string(jsonField(t, m.Data, "lease")), "the event carries the renewed lease")
		}
		evs := decodeEvents[model.RenewedEvent](t, e.sch, msgs)
		require.Equal(t, "rn", evs[0].PoolName)
		requireSameTime(t, l.ExpiresAt, evs[0].PreviousExpiresAt)
		requireSameTime(t, r1.ExpiresAt, evs[0].Lease.ExpiresAt)
		require.Equal(t, model.LeaseActive, evs[0].Lease.Status)
		require.Equal(t, l.FencingToken, evs[0].Lease.FencingToken)
		requireSameTime(t, r1.ExpiresAt, evs[1].PreviousExpiresAt)
		requireSameTime(t, r2.ExpiresAt, evs[1].Lease.ExpiresAt)
		// Renew is not an acquire or a release.
		require.Len(t, e.events(model.EventAcquired), 1)
		require.Empty(t, e.events(model.EventReleased))
	})
}

// --- wait_seconds -------------------------------------------------------------

func TestLifecycleWait(t *testing.T) {
	t.Run("arrival order and deadline", func(t *testing.T) {
		e := newEnv(t, envConfig{realClock: true})
		w := e.workers[0]
		e.createPool("fifo")
		px := e.addProxies("fifo", map[string]any{"host": "10.2.0.1", "port": 8080, "max_concurrency": 1})[0]
		holder, _ := e.mustAcquire(map[string]any{"pool_name": "fifo", "consumer_name": "holder", "duration_seconds": 60})

		const (
			waiters = 5
			served  = 3 // waiters 0 and 1 release at once, 2 keeps the proxy
			// The waiters served wait long: served before their deadline,
			// they were woken by a release and not by the deadline's last
			// look. The others run out of a short wait.
			long  = 30 * time.Second
			short = 3 * time.Second
		)
		for i := 0; i < waiters; i++ {
			e.ok("admin.consumers.ensure", map[string]any{"name": fmt.Sprintf("waiter-%d", i)})
		}
		type outcome struct {
			acq timedReply
			rel timedReply
		}
		outs := make([]outcome, waiters)
		waitOf := func(i int) time.Duration {
			if i < served {
				return long
			}
			return short
		}
		var wg sync.WaitGroup
		for i := 0; i < waiters; i++ {
			data := body(t, map[string]any{"pool_name": "fifo", "consumer_name": fmt.Sprintf("waiter-%d", i), "duration_seconds": 60, "wait_seconds": waitOf(i).Seconds()})
			e.requireValidRequest("acquire", data)
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i].acq = timedRequest(e.nc, "pharox.acquire", data, requestTimeout+long)
				rep, err := acquireOutcome(outs[i].acq)
				if err != nil || rep.Lease == nil || i >= served-1 {
					return
				}
				outs[i].rel = timedRequest(e.nc, "pharox.release", body(t, map[string]any{"lease_id": rep.Lease.ID}), requestTimeout)
			}()
			// Barrier: this waiter is queued and asleep before the next is
			// sent, however loaded the machine.
			waitersAsleep(t, w, i+1, uint64(i+1))
		}
		require.Zero(t, w.Manager.Counters().Retries, "no waiter woke before the release")
		released := timedRequest(e.nc, "pharox.release", body(t, map[string]any{"lease_id": holder.ID}), requestTimeout)
		require.NoError(t, released.err)
		wg.Wait()

		var leases []*model.Lease
		for i, o := range outs {
			leases = append(leases, requireAcquireReply(t, e, o.acq, fmt.Sprintf("waiter %d", i)))
		}
		// Served in arrival order: each lease commits after the one before
		// (fencing tokens strictly increase per proxy), and each reply comes
		// after the release of the lease before it was sent.
		prevRel := released
		for i := 0; i < served; i++ {
			l := leases[i]
			require.NotNil(t, l, "waiter %d is served", i)
			require.Equal(t, px.ID, l.ProxyID)
			require.Equal(t, fmt.Sprintf("waiter-%d", i), l.ConsumerName)
			if i > 0 {
				require.Greater(t, l.FencingToken, leases[i-1].FencingToken, "waiter %d is served after waiter %d", i, i-1)
			} else {
				require.Greater(t, l.FencingToken, holder.FencingToken)
			}
			// The waiter may even answer before the release does: the
			// release wakes it with the proxy write, then records the
			// lease's ending and replies.
			t.Logf("wake latency (release reply -> waiter %d reply, one worker): %v", i, outs[i].acq.got.Sub(prevRel.got))
			require.True(t, outs[i].acq.got.After(prevRel.sent), "waiter %d is served only after the release is sent", i)
			require.Less(t, outs[i].acq.took(), long, "waiter %d is woken by the release, not by its deadline", i)
			if i < served-1 {
				require.NoError(t, outs[i].rel.err)
				require.Empty(t, outs[i].rel.msg.Header.Get(micro.ErrorCodeHeader), "%s", outs[i].rel.msg.Data)
				prevRel = outs[i].rel
			}
		}
		// The others run out of time and get null, not before their
		// deadline (how soon after it is measured by cmd/bench, not here).
		for i := served; i < waiters; i++ {
			require.Nil(t, leases[i], "waiter %d finds the proxy still held", i)
			took := outs[i].acq.took()
			t.Logf("waiter %d: null after %v (wait_seconds %v)", i, took, short)
			require.GreaterOrEqual(t, took, short-10*time.Millisecond, "waiter %d waits its full time", i)
		}
		require.Equal(t, counts{Total: 1, Active: 1, Leased: 1, Leases: 1}, countsOf(e.stats("fifo")))
		require.Equal(t, model.LeaseActive, e.getLease(leases[served-1].ID).Status, "the last one served keeps it")
		require.Len(t, e.events(model.EventAcquired), 1+served)
		require.Len(t, e.events(model.EventAcquireFailed), waiters-served)
		require.Zero(t, w.Manager.Waiters())
	})

	t.Run("across two workers", func(t *testing.T) {
		// Worker A serves pharox.*, worker B pharoxb.*; they share every
		// bucket, so a release through one wakes a waiter on the other.
		e := newEnv(t, envConfig{realClock: true})
		b := startWorker(t, e.srv, workertest.Config{Prefix: "pharoxb"})
		byPrefix := map[string]*workertest.Worker{"pharox": e.workers[0], "pharoxb": b}
		e.createPool("x")
		px := e.addProxies("x", map[string]any{"host": "10.3.0.1", "port": 8080, "max_concurrency": 1})[0]
		var rep model.AcquireReply
		e.prefixed("pharoxb", "acquire", map[string]any{"pool_name": "x", "consumer_name": "holder", "duration_seconds": 60}, &rep)
		require.NotNil(t, rep.Lease)
		held := *rep.Lease

		const wait = 30 * time.Second
		for _, dir := range []struct{ waitOn, releaseOn string }{{"pharox", "pharoxb"}, {"pharoxb", "pharox"}} {
			ww := byPrefix[dir.waitOn]
			sleeps := ww.Manager.Counters().Sleeps
			ch := make(chan timedReply, 1)
			data := body(t, map[string]any{"pool_name": "x", "consumer_name": "waiter-on-" + dir.waitOn, "duration_seconds": 60, "wait_seconds": wait.Seconds()})
			go func() { ch <- timedRequest(e.nc, dir.waitOn+".acquire", data, requestTimeout+wait) }()
			// Barrier: the waiter is asleep on its worker, so nothing can
			// answer it but a release or its deadline.
			waitersAsleep(t, ww, 1, sleeps+1)
			select {
			case r := <-ch:
				t.Fatalf("waiter on %s answered before any release: %s", dir.waitOn, r.msg.Data)
			default:
			}
			rel := timedRequest(e.nc, dir.releaseOn+".release", body(t, map[string]any{"lease_id": held.ID}), requestTimeout)
			require.NoError(t, rel.err)
			require.Empty(t, rel.msg.Header.Get(micro.ErrorCodeHeader), "%s", rel.msg.Data)
			r := <-ch
			l := requireAcquireReply(t, e, r, "waiter on "+dir.waitOn)
			require.NotNil(t, l, "the release through %s serves the waiter on %s", dir.releaseOn, dir.waitOn)
			require.Equal(t, px.ID, l.ProxyID)
			require.Greater(t, l.FencingToken, held.FencingToken)
			t.Logf("wake latency (release reply on %s -> waiter reply on %s): %v", dir.releaseOn, dir.waitOn, r.got.Sub(rel.got))
			require.True(t, r.got.After(rel.sent), "served only after the release is sent")
			require.Less(t, r.took(), wait, "woken by the release, not by its deadline")
			held = *l
		}
		require.Equal(t, counts{Total: 1, Active: 1, Leased: 1, Leases: 1}, countsOf(e.stats("x")))
	})

	t.Run("a thousand waiters", func(t *testing.T) {
		const (
			waiters  = 1000
			slots    = 10 // of the busy proxy, all held at first
			inflight = 8
			// A waiter's wait starts when the worker takes it up. Every
			// check below holds whenever the waiters' deadlines pass: a
			// null is never early, a lease never comes before a release.
			// The wait only needs to outlast the checks between the last
			// waiter's arrival and the releases, so that slots waiters are
			// still queued to take the freed slots.
			wait = 10 * time.Second
		)
		e := newEnv(t, envConfig{realClock: true, cfg: workertest.Config{MaxInflight: inflight}})
		w := e.workers[0]
		e.createPool("busy")
		e.createPool("other")
		busy := e.addProxies("busy", map[string]any{"host": "10.4.0.1", "port": 8080, "max_concurrency": slots})[0]
		e.addProxies("other", map[string]any{"host": "10.4.0.2", "port": 8080})
		var holders []model.Lease
		for i := 0; i < slots; i++ {
			l, _ := e.mustAcquire(map[string]any{"pool_name": "busy", "consumer_name": "holder", "duration_seconds": 60})
			holders = append(holders, l)
		}
		e.ok("admin.consumers.ensure", map[string]any{"name": "waiter"})

		// The requests go out in order on the test's connection, each with
		// a reply subject of its own; one subscription collects the replies.
		data := body(t, map[string]any{"pool_name": "busy", "consumer_name": "waiter", "duration_seconds": 60, "wait_seconds": wait.Seconds()})
		replies := make([]timedReply, waiters)
		inbox := nats.NewInbox()
		replyCh := make(chan *nats.Msg, waiters)
		rsub, err := e.nc.ChanSubscribe(inbox+".*", replyCh)
		require.NoError(t, err)
		defer func() { _ = rsub.Unsubscribe() }()
		var answered atomic.Int64
		collected := make(chan struct{})
		go func() {
			defer close(collected)
			timeout := time.After(wait + time.Minute)
			for n := 0; n < waiters; n++ {
				select {
				case m := <-replyCh:
					var i int
					if _, err := fmt.Sscan(m.Subject[len(inbox)+1:], &i); err != nil || i < 0 || i >= waiters {
						continue
					}
					replies[i].got, replies[i].msg = time.Now(), m
					answered.Add(1)
				case <-timeout:
					return
				}
			}
		}()
		for i := range replies {
			replies[i].sent = time.Now()
			require.NoError(t, e.nc.PublishRequest("pharox.acquire", fmt.Sprintf("%s.%d", inbox, i), data))
		}
		// A request on the same endpoint, sent after them on the same
		// connection, is handled after all 1000 were handed to the worker.
		// It waits for the worker to take up the 1000 before it: on a
		// starved machine (a -race run beside benchmarks) that took over
		// the usual 10 s request time-out.
		probe := timedRequest(e.nc, "pharox.acquire", body(t, map[string]any{"pool_name": "other", "consumer_name": "probe", "duration_seconds": 60}), time.Minute)
		require.NotNil(t, requireAcquireReply(t, e, probe, "probe"))
		t.Logf("%d waiters handed to the worker, the probe behind them answered after %v", waiters, probe.took())
		// Barrier: every waiter went to sleep once (none has a reason to
		// wake before a release: no lease of the pool runs out within the
		// wait).
		settle := time.Now()
		require.Eventually(t, func() bool { return w.Manager.Counters().Sleeps >= waiters }, time.Minute, time.Millisecond,
			"the %d waiters do not all go to sleep", waiters)
		parked := w.Manager.Waiters()
		t.Logf("waiters asleep %v after the probe; %d still queued", time.Since(settle), parked)
		require.GreaterOrEqual(t, parked, slots, "the waiters outlast their entering")

		// Parked waiters do no work (a count, not a CPU time): none wakes
		// or tries the pool again while the requests below are served.
		before := w.Manager.Counters()
		require.Zero(t, before.Retries, "no waiter retried before a release")

		// They hold no in-flight slot: other requests are served while all
		// of them stay parked (with the slots held they could only be
		// served once the waiters gave up).
		for _, op := range []struct {
			subject string
			req     map[string]any
		}{
			{"pharox.stats", map[string]any{"pool_name": "busy"}},
			{"pharox.acquire", map[string]any{"pool_name": "other", "consumer_name": "other", "duration_seconds": 60}},
			{"pharox.acquire", map[string]any{"pool_name": "other", "consumer_name": "other", "duration_seconds": 60, "wait_seconds": 5}},
			{"pharox.stats", map[string]any{"pool_name": "other"}},
			{"pharox.leases.get", map[string]any{"lease_id": holders[0].ID}},
		} {
			r := timedRequest(e.nc, op.subject, body(t, op.req), requestTimeout)
			require.NoError(t, r.err, op.subject)
			require.Empty(t, r.msg.Header.Get(micro.ErrorCodeHeader), "%s: %s", op.subject, r.msg.Data)
			t.Logf("%s with %d waiters parked on %d in-flight slots: %v", op.subject, parked, inflight, r.took())
		}
		after := w.Manager.Counters()
		require.Equal(t, before.Sleeps, after.Sleeps, "no parked waiter woke")
		require.Equal(t, before.Retries, after.Retries, "no parked waiter tried again")
		st := e.stats("busy")
		require.Equal(t, counts{Total: 1, Active: 1, Leased: 1, Leases: slots}, countsOf(st))
		queued := w.Manager.Waiters()
		require.GreaterOrEqual(t, queued, slots, "waiters are still queued for the slots about to be freed")

		// Each freed slot serves one waiter; the rest get null at their
		// deadline.
		firstRelease := time.Now()
		for _, h := range holders {
			e.release(h.ID)
		}
		<-collected
		require.Equal(t, int64(waiters), answered.Load(), "every waiter is answered")
		var got []*model.Lease
		var nulls int
		for i, r := range replies {
			rep, err := acquireOutcome(r)
			require.NoError(t, err, "waiter %d", i)
			_, repName := reqSchema(t, "acquire")
			require.NoError(t, e.sch.Validate(repName, r.msg.Data), "waiter %d: %s", i, r.msg.Data)
			if rep.Lease != nil {
				require.Equal(t, busy.ID, rep.Lease.ProxyID)
				require.True(t, r.got.After(firstRelease), "waiter %d is served only after a release", i)
				require.Less(t, r.took(), wait, "waiter %d is woken by a release, not by its deadline", i)
				got = append(got, rep.Lease)
				continue
			}
			nulls++
			require.GreaterOrEqual(t, r.took(), wait-10*time.Millisecond, "waiter %d waits its full time", i)
		}
		t.Logf("%d waiters served, %d null", len(got), nulls)
		require.Len(t, got, slots, "every freed slot serves a waiter")
		require.Equal(t, waiters-slots, nulls)
		require.Equal(t, counts{Total: 1, Active: 1, Leased: 1, Leases: slots}, countsOf(e.stats("busy")))
		require.Zero(t, w.Manager.Waiters())
	})

	t.Run("expiries and new proxies", func(t *testing.T) {
		// A lease that expires frees its slot without any write, and still
		// wakes a waiter; an expiry elsewhere (another pool, or a lease
		// released before its expiry) wakes nobody: parked waiters do not
		// try again. Proxies added to the pool wake as many as they can
		// serve. No waiter reaches its deadline.
		const (
			waiters = 200
			wait    = 60 * time.Second
		)
		e := newEnv(t, envConfig{realClock: true})
		w := e.workers[0]
		e.createPool("held")
		e.createPool("elsewhere")
		px := e.addProxies("held", map[string]any{"host": "10.4.1.1", "port": 8080, "max_concurrency": 1})[0]
		e.addProxies("elsewhere", map[string]any{"host": "10.4.1.2", "port": 8080})
		holder, _ := e.mustAcquire(map[string]any{"pool_name": "held", "consumer_name": "holder", "duration_seconds": 60})
		// Two leases elsewhere whose expiries pass while the waiters sleep;
		// one of them released at once.
		short, _ := e.mustAcquire(map[string]any{"pool_name": "elsewhere", "consumer_name": "other", "duration_seconds": 2})
		gone, _ := e.mustAcquire(map[string]any{"pool_name": "elsewhere", "consumer_name": "other", "duration_seconds": 2})
		e.release(gone.ID)
		e.ok("admin.consumers.ensure", map[string]any{"name": "waiter"})

		data := body(t, map[string]any{"pool_name": "held", "consumer_name": "waiter", "duration_seconds": 60, "wait_seconds": wait.Seconds()})
		inbox := nats.NewInbox()
		replyCh := make(chan *nats.Msg, waiters)
		rsub, err := e.nc.ChanSubscribe(inbox+".*", replyCh)
		require.NoError(t, err)
		defer func() { _ = rsub.Unsubscribe() }()
		for i := 0; i < waiters; i++ {
			require.NoError(t, e.nc.PublishRequest("pharox.acquire", fmt.Sprintf("%s.%d", inbox, i), data))
		}
		probe := timedRequest(e.nc, "pharox.acquire", body(t, map[string]any{"pool_name": "elsewhere", "consumer_name": "probe", "duration_seconds": 60}), requestTimeout)
		require.NotNil(t, requireAcquireReply(t, e, probe, "probe"))
		waitersAsleep(t, w, waiters, waiters)
		asleep := time.Now()
		// The expiry elsewhere passes: every waiter asleep before it has
		// its alarm there and wakes, counts it, and goes back to sleep
		// without trying the pool (it frees nothing of theirs).
		require.Eventually(t, func() bool {
			return time.Now().After(short.ExpiresAt) && countsOf(e.stats("elsewhere")).Leases == 1
		}, time.Minute, 10*time.Millisecond, "the lease elsewhere does not expire")
		if asleep.Before(short.ExpiresAt) {
			require.Eventually(t, func() bool { return w.Manager.Counters().Sleeps >= 2*waiters }, time.Minute, time.Millisecond,
				"the waiters asleep before the expiry elsewhere have their alarm there")
		}
		c := w.Manager.Counters()
		t.Logf("%d waiters asleep %v before the expiry elsewhere; %d sleeps, %d retries", waiters, short.ExpiresAt.Sub(asleep), c.Sleeps, c.Retries)
		require.Empty(t, replyCh, "no waiter is answered")
		require.Zero(t, c.Retries, "expiries elsewhere do not wake the waiters")
		require.Equal(t, waiters, w.Manager.Waiters())

		// The holder's lease runs out (renewed to one second): no write
		// frees the slot, and one waiter gets it.
		_, r := e.renew(map[string]any{"lease_id": holder.ID, "duration_seconds": 1})
		expiry := r.ExpiresAt
		var first *nats.Msg
		select {
		case first = <-replyCh:
		case <-time.After(wait / 2):
			t.Fatal("the expiry of the held lease wakes no waiter")
		}
		got := time.Now()
		l := requireAcquireReply(t, e, timedReply{msg: first}, "waiter woken by an expiry")
		require.NotNil(t, l, "%s", first.Data)
		require.Equal(t, px.ID, l.ProxyID)
		late := got.Sub(expiry)
		t.Logf("waiter served %v after the holder's lease expired", late)
		require.GreaterOrEqual(t, late, -10*time.Millisecond, "not before the expiry")
		require.Equal(t, model.LeaseExpired, e.getLease(holder.ID).Status)

		// New proxies serve the rest (ten of 20 slots: the writes of one
		// proxy's leases go one after the other).
		var more []map[string]any
		for i := 0; i < 10; i++ {
			more = append(more, map[string]any{"host": fmt.Sprintf("10.4.2.%d", i+1), "port": 8080, "max_concurrency": 20})
		}
		e.addProxies("held", more...)
		added := time.Now()
		for n := 1; n < waiters; n++ {
			select {
			case m := <-replyCh:
				l := requireAcquireReply(t, e, timedReply{msg: m}, "waiter woken by a new proxy")
				require.NotNil(t, l, "%s", m.Data)
			case <-time.After(wait / 2):
				t.Fatalf("%d waiters of %d served after proxies were added", n-1, waiters-1)
			}
		}
		t.Logf("%d waiters served %v after proxies were added", waiters-1, time.Since(added))
		require.Equal(t, counts{Total: 11, Active: 11, Available: 1, Leased: 11, Leases: waiters}, countsOf(e.stats("held")))
	})

	t.Run("no lost wake-ups", func(t *testing.T) {
		// Slots freed at the same moment serve as many waiters: a waiter
		// that was woken and is taking one slot must not swallow the
		// wake-up meant for the next. Each round the waiters served become
		// the holders of the next.
		const (
			slots  = 2
			rounds = 10
			// Served before the deadline means woken by a release; a lost
			// wake-up would leave a waiter to its deadline's last look.
			wait = 20 * time.Second
		)
		e := newEnv(t, envConfig{realClock: true})
		w := e.workers[0]
		e.createPool("lw")
		px := e.addProxies("lw", map[string]any{"host": "10.2.1.1", "port": 8080, "max_concurrency": slots})[0]
		var held []model.Lease
		for i := 0; i < slots; i++ {
			l, _ := e.mustAcquire(map[string]any{"pool_name": "lw", "consumer_name": "holder", "duration_seconds": 60})
			held = append(held, l)
		}
		data := body(t, map[string]any{"pool_name": "lw", "consumer_name": "waiter", "duration_seconds": 60, "wait_seconds": wait.Seconds()})
		for round := 0; round < rounds; round++ {
			sleeps := w.Manager.Counters().Sleeps
			replies := make(chan timedReply, slots)
			for i := 0; i < slots; i++ {
				go func() { replies <- timedRequest(e.nc, "pharox.acquire", data, requestTimeout+wait) }()
			}
			waitersAsleep(t, w, slots, sleeps+slots)
			var wg sync.WaitGroup
			rels := make([]timedReply, slots)
			for i, l := range held {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rels[i] = timedRequest(e.nc, "pharox.release", body(t, map[string]any{"lease_id": l.ID}), requestTimeout)
				}()
			}
			wg.Wait()
			for _, r := range rels {
				require.NoError(t, r.err)
				require.Empty(t, r.msg.Header.Get(micro.ErrorCodeHeader), "%s", r.msg.Data)
			}
			held = held[:0]
			for i := 0; i < slots; i++ {
				r := <-replies
				l := requireAcquireReply(t, e, r, fmt.Sprintf("round %d waiter", round))
				require.NotNil(t, l, "round %d: %d slots freed at once serve %d waiters (null after %v)", round, slots, slots, r.took())
				require.Equal(t, px.ID, l.ProxyID)
				require.Less(t, r.took(), wait, "round %d: woken by a release, not by the deadline", round)
				held = append(held, *l)
			}
		}
	})

	t.Run("deadline ignores the store clock", func(t *testing.T) {
		// The wait is real time from the request's arrival, whatever the
		// store's clock says: here a fake one, set a minute behind and
		// then a minute ahead. Waiting by the store clock would end such a
		// wait a minute late or at once.
		e := newEnv(t, envConfig{})
		e.createPool("fc")
		e.addProxies("fc", map[string]any{"host": "10.5.0.1", "port": 8080, "max_concurrency": 1})
		e.mustAcquire(map[string]any{"pool_name": "fc", "duration_seconds": 600})
		for _, step := range []time.Duration{-time.Minute, 2 * time.Minute} {
			e.clock.Advance(step)
			r := timedRequest(e.nc, "pharox.acquire", body(t, map[string]any{"pool_name": "fc", "wait_seconds": 0.5}), requestTimeout)
			require.Nil(t, requireAcquireReply(t, e, r, "waiter"))
			t.Logf("wait_seconds 0.5 with the store clock moved by %v: null after %v", step, r.took())
			require.GreaterOrEqual(t, r.took(), 490*time.Millisecond)
			require.Less(t, r.took(), 30*time.Second, "not a minute late")
		}
	})
}

// waitersAsleep waits until worker w has n acquires queued waiting for a
// proxy and its waiters went to sleep at least sleeps times since it
// started: the barrier before anything that must find them asleep.
func waitersAsleep(t testing.TB, w *workertest.Worker, n int, sleeps uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		return w.Manager.Waiters() == n && w.Manager.Counters().Sleeps >= sleeps
	}, time.Minute, time.Millisecond, "%d waiters do not go to sleep (%d queued, %d sleeps)", n, w.Manager.Waiters(), w.Manager.Counters().Sleeps)
}

// --- request_id -----------------------------------------------------------------

func TestLifecycleIdempotency(t *testing.T) {
	t.Run("concurrent duplicates through two workers", func(t *testing.T) {
		e := newEnv(t, envConfig{realClock: true})
		b := startWorker(t, e.srv, workertest.Config{Prefix: "pharoxb"})
		// B publishes its events on pharoxb.events.*, which PHAROX_EVENTS
		// does not store: count them at their source, B's acquire hook.
		var bMu sync.Mutex
		var bAcquired []model.AcquireEvent
		b.Manager.RegisterAcquireCallback(func(ev model.AcquireEvent) {
			bMu.Lock()
			defer bMu.Unlock()
			bAcquired = append(bAcquired, ev)
		})
		e.createPool("idem")
		e.addProxies("idem",
			map[string]any{"host": "10.6.0.1", "port": 8080},
			map[string]any{"host": "10.6.0.2", "port": 8080},
			map[string]any{"host": "10.6.0.3", "port": 8080})

		const n = 20
		data := body(t, map[string]any{"pool_name": "idem", "consumer_name": "crawler", "duration_seconds": 60, "request_id": "job-42"})
		e.requireValidRequest("acquire", data)
		replies := make([]timedReply, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			prefix := []string{"pharox", "pharoxb"}[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				replies[i] = timedRequest(e.nc, prefix+".acquire", data, requestTimeout)
			}()
		}
		close(start)
		wg.Wait()
		var first *model.Lease
		var slowest time.Duration
		for _, r := range replies {
			slowest = max(slowest, r.took())
		}
		t.Logf("%d concurrent duplicates answered, the slowest after %v", n, slowest)
		for i, r := range replies {
			l := requireAcquireReply(t, e, r, fmt.Sprintf("duplicate %d", i))
			require.NotNil(t, l, "duplicate %d", i)
			if first == nil {
				first = l
			}
			require.Equal(t, first.ID, l.ID, "duplicate %d gets the one lease", i)
			require.Equal(t, first.FencingToken, l.FencingToken)
			require.Equal(t, model.LeaseActive, l.Status)
		}
		require.Equal(t, counts{Total: 3, Active: 3, Available: 3, Leased: 1, Leases: 1}, countsOf(e.stats("idem")))
		var stB model.PoolStatsSnapshot
		e.prefixed("pharoxb", "stats", map[string]any{"pool_name": "idem"}, &stB)
		require.Equal(t, 1, stB.TotalLeases)

		acquiredA := decodeEvents[model.AcquireEvent](t, e.sch, e.events(model.EventAcquired))
		bMu.Lock()
		all := append(acquiredA, bAcquired...)
		bMu.Unlock()
		require.Len(t, all, 1, "exactly one acquired event over both workers (A %d, B %d)", len(acquiredA), len(all)-len(acquiredA))
		require.NotNil(t, all[0].Lease)
		evLease := all[0].Lease.ID
		require.Equal(t, first.ID, evLease)
		require.Empty(t, e.events(model.EventAcquireFailed))

		// While the lease is active, a later retry through either worker
		// still gets it.
		for _, prefix := range []string{"pharox", "pharoxb"} {
			var rep model.AcquireReply
			e.prefixed(prefix, "acquire", data, &rep)
			require.Equal(t, first.ID, rep.Lease.ID)
		}
		require.Equal(t, 1, e.stats("idem").TotalLeases)
	})

	t.Run("reuse after the lease ends and scope", func(t *testing.T) {
		e := newEnv(t, envConfig{workers: 2})
		e.createPool("idem")
		px := e.addProxies("idem", map[string]any{"host": "10.6.1.1", "port": 8080})[0]
		req := map[string]any{"pool_name": "idem", "consumer_name": "crawler", "duration_seconds": 30, "request_id": "job-7"}
		l1, _ := e.mustAcquire(req)
		again, _ := e.mustAcquire(req)
		require.Equal(t, l1.ID, again.ID)

		// Scoped to the consumer: another consumer with the same key gets
		// a lease of its own, and its retries get that one.
		o1, _ := e.mustAcquire(map[string]any{"pool_name": "idem", "consumer_name": "indexer", "duration_seconds": 30, "request_id": "job-7"})
		require.NotEqual(t, l1.ID, o1.ID)
		require.Equal(t, "indexer", o1.ConsumerName)
		o2, _ := e.mustAcquire(map[string]any{"pool_name": "idem", "consumer_name": "indexer", "duration_seconds": 30, "request_id": "job-7"})
		require.Equal(t, o1.ID, o2.ID)
		// The default consumer is a consumer too.
		d1, _ := e.mustAcquire(map[string]any{"pool_name": "idem", "request_id": "job-7"})
		require.NotEqual(t, l1.ID, d1.ID)
		require.NotEqual(t, o1.ID, d1.ID)
		require.Equal(t, 3, e.getProxy(px.ID).CurrentLeases)

		// After release, the key starts a new lease, which its retries get.
		e.release(l1.ID)
		l2, _ := e.mustAcquire(req)
		require.NotEqual(t, l1.ID, l2.ID)
		require.Equal(t, model.LeaseActive, l2.Status)
		l2again, _ := e.mustAcquire(req)
		require.Equal(t, l2.ID, l2again.ID)
		require.Equal(t, model.LeaseReleased, e.getLease(l1.ID).Status)

		// After expiry too.
		e.clock.Advance(31 * time.Second)
		l3, _ := e.mustAcquire(req)
		require.NotEqual(t, l2.ID, l3.ID)
		require.Equal(t, model.LeaseExpired, e.getLease(l2.ID).Status)
		require.Len(t, e.events(model.EventAcquired), 5, "l1, o1, d1, l2, l3")
	})

	t.Run("request_id length", func(t *testing.T) {
		e := newEnv(t, envConfig{})
		e.createPool("idem")
		e.addProxies("idem", map[string]any{"host": "10.6.2.1", "port": 8080})
		before := e.snapshot([]string{"idem"}, nil)
		long := map[string]any{"pool_name": "idem", "consumer_name": "c", "request_id": strings.Repeat("r", 129)}
		e.requireInvalidRequest("acquire", body(t, long))
		det := e.fail("acquire", long, 400, "bad_request")
		require.Contains(t, det.Message, "request_id")
		require.Equal(t, before, e.snapshot([]string{"idem"}, nil), "a refused acquire changes nothing")

		for _, id := range []string{strings.Repeat("r", 128), strings.Repeat("é", 128), strings.Repeat("🙂", 128), "a.b*c>d e/f"} {
			req := map[string]any{"pool_name": "idem", "consumer_name": "c", "request_id": id}
			l1, _ := e.mustAcquire(req)
			l2, _ := e.mustAcquire(req)
			require.Equal(t, l1.ID, l2.ID, "request_id %q", id)
		}
	})
}

// --- expiry sweeps --------------------------------------------------------------

func TestLifecycleExpiry(t *testing.T) {
	const n = 100
	e := newEnv(t, envConfig{workers: 3, realClock: true, cfg: workertest.Config{SweepInterval: 200 * time.Millisecond}})
	expiredCh := make(chan *nats.Msg, 4*n)
	sub, err := e.nc.ChanSubscribe("pharox.events.expired", expiredCh)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, e.nc.Flush())

	e.createPool("exp")
	proxies := make([]map[string]any, n)
	for i := range proxies {
		proxies[i] = map[string]any{"host": fmt.Sprintf("10.7.0.%d", i+1), "port": 8080, "max_concurrency": 1}
	}
	e.addProxies("exp", proxies...)

	// 100 leases of one second, through all three workers.
	leases := make([]model.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	data := body(t, map[string]any{"pool_name": "exp", "consumer_name": "c", "duration_seconds": 1})
	began := time.Now()
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 10 {
				rep, err := acquireOutcome(timedRequest(e.nc, "pharox.acquire", data, requestTimeout))
				switch {
				case err != nil:
					errs[i] = err
				case rep.Lease == nil:
					errs[i] = fmt.Errorf("acquire %d found no proxy", i)
				default:
					leases[i] = *rep.Lease
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	acquired := time.Now()
	byID := map[string]model.Lease{}
	for _, l := range leases {
		byID[l.ID] = l
	}
	require.Len(t, byID, n)
	if st := e.stats("exp"); time.Since(began) < 800*time.Millisecond {
		// (A loaded machine may take longer than a lease to make them all.)
		require.Equal(t, counts{Total: n, Active: n, Leased: n, Leases: n}, countsOf(st))
	}

	// Collect expired events until none has come for a second after the last.
	seen := map[string]int{}
	var total int
	deadline := time.After(20 * time.Second)
	quiet := time.NewTimer(time.Hour)
	defer quiet.Stop()
collect:
	for {
		select {
		case m := <-expiredCh:
			var ev model.ExpiredEvent
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			seen[ev.Lease.ID]++
			total++
			if total >= n {
				quiet.Reset(time.Second)
			}
		case <-quiet.C:
			break collect
		case <-deadline:
			t.Fatalf("%d expired events in 20 s, want %d", total, n)
		}
	}
	t.Logf("%d expired events, the sweeps done %v after the last acquire", total, time.Since(acquired)-time.Second)
	require.Equal(t, n, total, "exactly one expired event per lease")
	for id, k := range seen {
		_, ok := byID[id]
		require.True(t, ok, "expired event for unknown lease %s", id)
		require.Equal(t, 1, k, "lease %s expired once", id)
	}
	exp := decodeEvents[model.ExpiredEvent](t, e.sch, e.events(model.EventExpired))
	require.Len(t, exp, n)
	for _, ev := range exp {
		require.Equal(t, model.LeaseExpired, ev.Lease.Status)
		requireSameTime(t, ev.Lease.ExpiresAt, *ev.Lease.ReleasedAt)
		require.False(t, ev.ExpiredAt.Before(ev.Lease.ExpiresAt), "recorded after its expiry")
		require.Equal(t, "exp", ev.PoolName)
	}

	require.Equal(t, counts{Total: n, Active: n, Available: n}, countsOf(e.stats("exp")), "stats return to zero")
	for _, p := range e.listAll("exp") {
		require.Zero(t, p.CurrentLeases)
	}
	for _, l := range leases {
		got := e.getLease(l.ID)
		require.Equal(t, model.LeaseExpired, got.Status)
		require.NotNil(t, got.ReleasedAt)
		requireSameTime(t, got.ExpiresAt, *got.ReleasedAt, "released_at = expires_at")
		requireSameTime(t, l.ExpiresAt, got.ExpiresAt)
	}
	require.Zero(t, e.cleanupCount(), "the sweeps left nothing to clean up")
	require.Empty(t, e.events(model.EventReleased))
	// The expiry was recorded in the lease records, not only computed on
	// read: every record in the bucket says expired.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, kvstore.LeasesBucket)
	require.NoError(t, err)
	for _, l := range leases {
		entry, err := kv.Get(ctx, l.ID)
		require.NoError(t, err)
		var stored model.Lease
		require.NoError(t, json.Unmarshal(entry.Value(), &stored))
		require.Equal(t, model.LeaseExpired, stored.Status, "stored record of %s", l.ID)
	}
}

// --- bounded history ------------------------------------------------------------

func TestLifecycleRetention(t *testing.T) {
	// Lease records live max-duration + retention after their last write:
	// here 2 s + 1 s.
	e := newQuietEnv(t, 2, workertest.Config{LeaseRetention: time.Second, MaxDuration: 2 * time.Second})
	e.createPool("ret")
	// Each cycling client has a proxy of its own (by source), so the
	// cycles measure storage, not contention.
	const clients = 8
	for i := 0; i < clients; i++ {
		e.addProxies("ret", map[string]any{"host": fmt.Sprintf("10.8.0.%d", i+1), "port": 8080, "source": fmt.Sprintf("client-%d", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, kvstore.LeasesBucket)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, st.TTL(), "bucket max age = max duration + retention")

	// One released lease: readable at once and through the retention,
	// then gone on its own. Watched while the cycles below run.
	probe, _ := e.mustAcquire(map[string]any{"pool_name": "ret", "consumer_name": "probe", "filters": map[string]any{"source": "client-0"}})
	e.release(probe.ID)
	releasedAt := time.Now()
	require.Equal(t, model.LeaseReleased, e.getLease(probe.ID).Status)
	type probeResult struct {
		goneAfter time.Duration
		err       error
	}
	probeDone := make(chan probeResult, 1)
	go func() {
		data, _ := json.Marshal(map[string]any{"lease_id": probe.ID})
		for time.Since(releasedAt) < 10*time.Second {
			msg, err := e.nc.Request("pharox.leases.get", data, requestTimeout)
			since := time.Since(releasedAt)
			if err != nil {
				probeDone <- probeResult{err: err}
				return
			}
			switch code := msg.Header.Get(micro.ErrorCodeHeader); code {
			case "":
			case "404":
				probeDone <- probeResult{goneAfter: since}
				return
			default:
				probeDone <- probeResult{err: fmt.Errorf("leases.get: %s %s", code, msg.Data)}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		probeDone <- probeResult{err: fmt.Errorf("lease record still readable %v after its release", time.Since(releasedAt))}
	}()

	// 10,000 acquire/release cycles from a few clients, and for at least
	// 7 s so that records age out meanwhile; at most 8 s, which under the
	// race detector or on a loaded machine ends it earlier, unless fewer
	// than 500 cycles are done by then: a machine busy enough for that
	// (seen at load average 15-20 on 2 cores) runs on until there are
	// enough to see a trend. The bucket's bytes are sampled every second.
	const (
		wantCycles = 10000
		minCycles  = 500
		minRun     = 7 * time.Second
		maxRun     = 8 * time.Second
	)
	more := func(n int64, ran time.Duration) bool {
		if n < minCycles {
			return ctx.Err() == nil
		}
		return ran < maxRun && (n < wantCycles || ran < minRun)
	}
	var done atomic.Int64
	var failed atomic.Value
	stop := make(chan struct{})
	type sample struct {
		at     time.Duration
		bytes  uint64
		cycles int64
	}
	var samples []sample
	var sampleWG sync.WaitGroup
	began := time.Now()
	sampleWG.Add(1)
	go func() {
		defer sampleWG.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				st, err := kv.Status(ctx)
				if err != nil {
					failed.Store(err)
					return
				}
				samples = append(samples, sample{time.Since(began), st.Bytes(), done.Load()})
			}
		}
	}()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		acqData := body(t, map[string]any{"pool_name": "ret", "consumer_name": "cycler", "filters": map[string]any{"source": fmt.Sprintf("client-%d", c)}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for more(done.Load(), time.Since(began)) && failed.Load() == nil {
				rep, err := acquireOutcome(timedRequest(e.nc, "pharox.acquire", acqData, requestTimeout))
				if err == nil && rep.Lease == nil {
					err = fmt.Errorf("no proxy free")
				}
				if err != nil {
					failed.Store(err)
					return
				}
				rel, _ := json.Marshal(map[string]any{"lease_id": rep.Lease.ID})
				msg, err := e.nc.Request("pharox.release", rel, requestTimeout)
				if err == nil && msg.Header.Get(micro.ErrorCodeHeader) != "" {
					err = fmt.Errorf("release: %s", msg.Data)
				}
				if err != nil {
					failed.Store(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(stop)
	sampleWG.Wait()
	if v := failed.Load(); v != nil {
		t.Fatalf("cycles failed after %d: %v", done.Load(), v)
	}

	pr := <-probeDone
	require.NoError(t, pr.err)
	t.Logf("probe lease record gone %v after its release", pr.goneAfter)
	require.Greater(t, pr.goneAfter, 2*time.Second, "kept max-duration + retention after its last write")
	require.Less(t, pr.goneAfter, 8*time.Second)

	total := done.Load()
	var desc []string
	for _, s := range samples {
		desc = append(desc, fmt.Sprintf("%.0fs:%dB/%d", s.at.Seconds(), s.bytes, s.cycles))
	}
	t.Logf("%d cycles in %v (%.0f/s); PHAROX_LEASES bytes/cycles done, each second: %s", total, elapsed, float64(total)/elapsed.Seconds(), strings.Join(desc, " "))
	require.GreaterOrEqual(t, total, int64(minCycles), "enough cycles to see a trend")
	require.GreaterOrEqual(t, len(samples), 6, "enough samples to see the trend")

	// The bytes follow the leases of the last few seconds, not all the
	// leases ever made. A record is ~the same size throughout; the first
	// sample, before anything aged out, gives it.
	perRecord := float64(samples[0].bytes) / float64(samples[0].cycles+1)
	t.Logf("~%.0f bytes per lease record", perRecord)
	for i := 4; i < len(samples); i++ {
		// Records written in the last 3 s are kept, plus up to a second
		// until the server removes the aged ones: a 4 s window.
		recent := samples[i].cycles - samples[i-4].cycles
		bound := uint64(perRecord*1.3*float64(recent)) + 64<<10
		require.LessOrEqual(t, samples[i].bytes, bound, "at %v: %d bytes for %d cycles in the last 4 s", samples[i].at, samples[i].bytes, recent)
	}
	half := samples[:len(samples)/2]
	maxFirst := slices.MaxFunc(half, func(a, b sample) int { return int(a.bytes) - int(b.bytes) }).bytes
	last := samples[len(samples)-1]
	t.Logf("max bytes in the first half %d (x1.5 = %d), last %d; every cycle's record kept would be ~%.0f bytes", maxFirst, maxFirst*3/2, last.bytes, perRecord*float64(total))

	// With no new leases, every record ages out.
	var end uint64
	require.Eventually(t, func() bool {
		st, err := kv.Status(ctx)
		if err != nil {
			return false
		}
		end = st.Bytes()
		return end == 0
	}, 8*time.Second, 100*time.Millisecond, "PHAROX_LEASES empties once nothing is written (%d bytes left)", end)
	t.Logf("PHAROX_LEASES empty %v after the last cycle", time.Since(began)-elapsed)
}

// --- expiry grace ---------------------------------------------------------------

func TestLifecycleExpiryGrace(t *testing.T) {
	e := newEnv(t, envConfig{workers: 2, cfg: workertest.Config{ExpiryGrace: 2 * time.Second}})
	e.createPool("grace")
	px := e.addProxies("grace", map[string]any{"host": "10.9.0.1", "port": 8080, "max_concurrency": 1})[0]
	l, _ := e.mustAcquire(map[string]any{"pool_name": "grace", "consumer_name": "slow", "duration_seconds": 1})
	t0 := l.AcquiredAt
	requireSameTime(t, t0.Add(time.Second), l.ExpiresAt)

	// +1.5 s: past expires_at but within the grace, the lease still holds.
	e.clock.Advance(1500 * time.Millisecond)
	for range e.workers {
		require.Nil(t, e.acquire(map[string]any{"pool_name": "grace", "consumer_name": "fast"}).Lease, "the slot is not freed within the grace")
	}
	got := e.getLease(l.ID)
	require.Equal(t, model.LeaseActive, got.Status)
	require.Nil(t, got.ReleasedAt)
	require.Equal(t, 1, e.getProxy(px.ID).CurrentLeases)
	require.Equal(t, counts{Total: 1, Active: 1, Leased: 1, Leases: 1}, countsOf(e.stats("grace")))
	require.Zero(t, e.cleanupCount(), "cleanup does not expire within the grace")
	require.Empty(t, e.events(model.EventExpired))

	// +3.1 s: past expires_at + grace, the slot is free.
	e.clock.Advance(1600 * time.Millisecond)
	got = e.getLease(l.ID)
	require.Equal(t, model.LeaseExpired, got.Status)
	requireSameTime(t, l.ExpiresAt, *got.ReleasedAt)
	require.Equal(t, counts{Total: 1, Active: 1, Available: 1}, countsOf(e.stats("grace")))
	next, _ := e.mustAcquire(map[string]any{"pool_name": "grace", "consumer_name": "fast", "duration_seconds": 1})
	require.Equal(t, px.ID, next.ProxyID)
	require.Greater(t, next.FencingToken, l.FencingToken)
	exp := decodeEvents[model.ExpiredEvent](t, e.sch, e.events(model.EventExpired))
	require.Len(t, exp, 1)
	require.Equal(t, l.ID, exp[0].Lease.ID)
	requireSameTime(t, l.ExpiresAt, *exp[0].Lease.ReleasedAt)
	requireSameTime(t, e.clock.Now(), exp[0].ExpiredAt)
}
