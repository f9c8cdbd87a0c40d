package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// releases collects release events in order.
type releases struct {
	mu  sync.Mutex
	evs []model.ReleaseEvent
	got chan struct{}
}

func onRelease(t *testing.T, e *env) *releases {
	t.Helper()
	r := &releases{got: make(chan struct{}, 100)}
	sub, err := e.c.OnRelease(ctxT(t), func(ev model.ReleaseEvent) {
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.mu.Unlock()
		r.got <- struct{}{}
	})
	require.NoError(t, err)
	t.Cleanup(sub.Stop)
	return r
}

// next waits for the next release event.
func (r *releases) next(t *testing.T) model.ReleaseEvent {
	t.Helper()
	select {
	case <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no release event")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evs[len(r.evs)-1]
}

func TestWithLeaseReportsOutcome(t *testing.T) {
	t.Parallel()
	e, ctx, ps := newPoolEnv(t, "fb", 1, 0)
	px := ps[0]
	rels := onRelease(t, e)
	run := func(fn func(context.Context) error) error {
		return e.c.WithLease(ctx, model.AcquireRequest{PoolName: "fb"}, func(ctx context.Context, _ model.Lease, _ model.Proxy) error {
			return fn(ctx)
		})
	}
	failures := func() int {
		p, err := e.c.GetProxy(ctx, px.ID)
		require.NoError(t, err)
		return p.ConsecutiveFailures
	}

	blocked := errors.New("target answered 403: " + strings.Repeat("€", 2000))
	require.Equal(t, blocked, run(func(context.Context) error { return blocked }))
	ev := rels.next(t)
	require.Equal(t, model.OutcomeFailure, *ev.Outcome)
	require.Equal(t, 1024, len([]rune(*ev.Reason)), "the error's text, cut to 1024 code points")
	require.True(t, strings.HasPrefix(blocked.Error(), *ev.Reason))
	require.Equal(t, 1, failures())

	bad := errors.New("parse error in our own code")
	err := run(func(context.Context) error { return client.NotProxyFault(bad) })
	require.ErrorIs(t, err, bad, "the mark is transparent")
	ev = rels.next(t)
	require.Nil(t, ev.Outcome, "not the proxy's fault: no outcome")
	require.Nil(t, ev.Reason)
	require.Equal(t, 1, failures())

	// The caller gives up: not the proxy's fault either.
	cctx, cancel := context.WithCancel(ctx)
	err = e.c.WithLease(cctx, model.AcquireRequest{PoolName: "fb"}, func(ctx context.Context, _ model.Lease, _ model.Proxy) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Nil(t, rels.next(t).Outcome)
	require.Equal(t, 1, failures())

	require.NoError(t, run(func(context.Context) error { return nil }))
	ev = rels.next(t)
	require.Equal(t, model.OutcomeSuccess, *ev.Outcome)
	require.Nil(t, ev.Reason)
	require.Zero(t, failures(), "a success resets the count")

	// By hand: the model's helpers.
	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "fb"})
	require.NoError(t, err)
	_, err = e.c.Release(ctx, model.ReleaseFailure(lease.ID, "timeout"))
	require.NoError(t, err)
	require.Equal(t, "timeout", *rels.next(t).Reason)
	require.Equal(t, 1, failures())
}

// flaky stands between a client (prefix "flaky") and the workers: it
// refuses the first acquires with 503, loses the reply of the next one
// after the worker granted it, and passes the rest on. It records every
// acquire body it saw and every lease the workers granted.
type flaky struct {
	mu      sync.Mutex
	bodies  []model.AcquireRequest
	granted []string
}

func startFlaky(t *testing.T, e *env, refuse, lose int) *flaky {
	t.Helper()
	f := &flaky{}
	fwd := e.nc // forwarding on the client's connection is fine: another subject
	sub, err := e.nc.Subscribe("flaky.acquire", func(m *nats.Msg) {
		var req model.AcquireRequest
		_ = json.Unmarshal(m.Data, &req)
		f.mu.Lock()
		f.bodies = append(f.bodies, req)
		n := len(f.bodies)
		f.mu.Unlock()
		if n <= refuse {
			reply := nats.NewMsg(m.Reply)
			reply.Header.Set(micro.ErrorCodeHeader, "503")
			reply.Header.Set(micro.ErrorHeader, "stream leader election")
			reply.Data = []byte(`{"error":{"code":"unavailable","message":"stream leader election"}}`)
			_ = m.RespondMsg(reply)
			return
		}
		go func() {
			out, err := fwd.Request("pharox.acquire", m.Data, 5*time.Second)
			if err != nil {
				return
			}
			var rep model.AcquireReply
			if json.Unmarshal(out.Data, &rep) == nil && rep.Lease != nil {
				f.mu.Lock()
				f.granted = append(f.granted, rep.Lease.ID)
				f.mu.Unlock()
			}
			if n <= refuse+lose {
				return // the reply is lost on the way back
			}
			_ = m.Respond(out.Data)
		}()
	})
	require.NoError(t, err)
	require.NoError(t, e.nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return f
}

func TestAcquireWithRetryCarriesOneRequestID(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "rt", 1, 1)
	f := startFlaky(t, e, 2, 1)
	c := client.New(e.nc, client.WithPrefix("flaky"), client.WithTimeout(time.Second))
	lease, proxy, err := c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "rt", ConsumerName: ptr("bot")},
		client.RetryBackoff(10*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, err)
	require.NotNil(t, proxy)
	f.mu.Lock()
	defer f.mu.Unlock()
	// Two 503s, one lost reply, then the answer (a slow machine may time
	// out once more: the same key still gets the same lease).
	require.GreaterOrEqual(t, len(f.bodies), 4)
	id := f.bodies[0].RequestID
	require.NotNil(t, id, "a request_id is made up when none is given")
	for _, b := range f.bodies {
		require.Equal(t, *id, *b.RequestID, "every try carries the same request_id")
	}
	require.GreaterOrEqual(t, len(f.granted), 2)
	for _, id := range f.granted {
		require.Equal(t, lease.ID, id, "the retry after a lost reply gets the same lease back")
	}
	st, err := e.c.Stats(ctx, "rt")
	require.NoError(t, err)
	require.Equal(t, 1, st.TotalLeases, "no lease leaked")
}

func TestAcquireWithRetryWaitsForAFreeProxy(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "busy", 1, 1)
	held, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "busy"})
	require.NoError(t, err)
	failed := make(chan struct{}, 100)
	sub, err := e.c.OnAcquire(ctx, func(ev model.AcquireEvent) {
		if ev.Lease == nil {
			failed <- struct{}{}
		}
	})
	require.NoError(t, err)
	defer sub.Stop()

	type result struct {
		lease *model.Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		l, _, err := e.c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "busy", RequestID: ptr("job-7")},
			client.RetryBackoff(5*time.Millisecond, 20*time.Millisecond))
		done <- result{l, err}
	}()
	for i := 0; i < 2; i++ { // "none free" twice, then the proxy is freed
		select {
		case <-failed:
		case <-ctx.Done():
			t.Fatal("no acquire_failed event")
		}
	}
	_, err = e.c.Release(ctx, model.ReleaseRequest{LeaseID: held.ID})
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.NotNil(t, r.lease)

	// Bounded: by the attempts, or by ctx; both say none was free.
	_, _, err = e.c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "busy"}, client.RetryAttempts(2),
		client.RetryBackoff(time.Millisecond, time.Millisecond))
	require.ErrorIs(t, err, model.ErrNoProxyAvailable)
	require.ErrorContains(t, err, "2 tries")
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, _, err = e.c.AcquireWithRetry(sctx, model.AcquireRequest{PoolName: "busy"}, client.RetryBackoff(10*time.Millisecond, 20*time.Millisecond))
	require.ErrorIs(t, err, model.ErrNoProxyAvailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Other errors are not retried.
	start := time.Now()
	_, _, err = e.c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "nope"}, client.RetryBackoff(time.Second, time.Second))
	require.ErrorIs(t, err, client.ErrPoolNotFound)
	require.Less(t, time.Since(start), time.Second, "returned at once")

	// Options that cannot work are refused up front.
	_, _, err = e.c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "busy"}, client.RetryBackoff(time.Second, time.Millisecond))
	require.ErrorContains(t, err, "initial <= max")
	_, _, err = e.c.AcquireWithRetry(ctx, model.AcquireRequest{PoolName: "busy"}, client.RetryAttempts(-1))
	require.ErrorContains(t, err, "attempts")
}

func TestExcludeAndLastHealth(t *testing.T) {
	t.Parallel()
	e, ctx, ps := newPoolEnv(t, "ex", 3, 0)
	lease, proxy, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "ex", ExcludeProxyIDs: []string{ps[0].ID},
		Filters: &model.ProxyFilters{Protocol: model.Protocols{model.ProtocolHTTP}}})
	require.NoError(t, err)
	require.Equal(t, ps[1].ID, proxy.ID)
	_, err = e.c.Release(ctx, model.ReleaseSuccess(lease.ID))
	require.NoError(t, err)

	res, err := e.c.LastHealth(ctx, ps[2].ID)
	require.NoError(t, err)
	require.Nil(t, res, "never checked")
	_, err = e.c.ApplyHealth(ctx, model.HealthApplyRequest{ProxyID: ps[2].ID, Status: model.ProxyActive, LatencyMs: 7, Protocol: model.ProtocolHTTP})
	require.NoError(t, err)
	res, err = e.c.LastHealth(ctx, ps[2].ID)
	require.NoError(t, err)
	require.Equal(t, 7.0, res.LatencyMs)
	require.Equal(t, 1, res.Attempts)
	sel := model.SelectorLowestLatency
	_, proxy, err = e.c.Acquire(ctx, model.AcquireRequest{PoolName: "ex", Selector: &sel})
	require.NoError(t, err)
	require.Equal(t, ps[2].ID, proxy.ID, "the only measured proxy comes first")
}
