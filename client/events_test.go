package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/model"
)

// collector gathers events from a handler.
type collector struct {
	mu  sync.Mutex
	evs []client.Event
}

func (c *collector) add(ev client.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, ev)
}

func (c *collector) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.evs))
	for i, ev := range c.evs {
		out[i] = ev.Name
	}
	return out
}

func (c *collector) waitFor(t *testing.T, names ...string) []client.Event {
	t.Helper()
	require.Eventually(t, func() bool { return len(c.names()) >= len(names) }, 5*time.Second, 10*time.Millisecond,
		"want %v, have %v", names, c.names())
	require.Equal(t, names, c.names())
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]client.Event(nil), c.evs...)
}

func TestSubscribeEventsLive(t *testing.T) {
	t.Parallel()
	e, ctx, proxies := newPoolEnv(t, "ev", 1, 1)
	var col collector
	sub, err := e.c.SubscribeEvents(ctx, col.add)
	require.NoError(t, err)
	defer sub.Stop()

	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "ev", ConsumerName: ptr("bot")})
	require.NoError(t, err)
	none, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "ev"})
	require.NoError(t, err)
	require.Nil(t, none)
	_, err = e.c.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: ptr(30)})
	require.NoError(t, err)
	_, err = e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	require.NoError(t, err)
	_, err = e.c.ApplyHealth(ctx, model.HealthApplyRequest{ProxyID: proxies[0].ID, Status: model.ProxySlow, LatencyMs: 3000, Protocol: model.ProtocolHTTP})
	require.NoError(t, err)

	evs := col.waitFor(t, model.EventAcquired, model.EventAcquireFailed, model.EventRenewed, model.EventReleased, model.EventHealth)
	acq := evs[0]
	require.NoError(t, acq.DecodeErr)
	require.NotNil(t, acq.Acquire)
	require.Nil(t, acq.Release)
	require.Equal(t, "pharox.events.acquired", acq.Subject)
	require.Equal(t, lease.ID, acq.Acquire.Lease.ID)
	require.Equal(t, "bot", acq.Acquire.ConsumerName)
	require.Equal(t, "ev", acq.PoolName())
	require.Equal(t, lease.ID, acq.Lease().ID)
	require.NotEmpty(t, acq.MsgID)
	require.Zero(t, acq.Sequence)
	require.Equal(t, acq.Acquire.CompletedAt.UTC(), acq.Time)

	require.NotNil(t, evs[1].Acquire)
	require.Nil(t, evs[1].Acquire.Lease)
	require.Nil(t, evs[1].Lease())
	require.NotNil(t, evs[2].Renewed)
	require.Equal(t, lease.ExpiresAt, evs[2].Renewed.PreviousExpiresAt)
	require.NotNil(t, evs[3].Release)
	require.Equal(t, model.LeaseReleased, evs[3].Release.Lease.Status)
	require.NotNil(t, evs[4].Health)
	require.Equal(t, model.ProxySlow, evs[4].Health.Result.Status)
	require.Equal(t, "ev", evs[4].PoolName())

	sub.Stop()
	<-sub.Done()
	// A second subscription is the barrier: once it has the event published
	// after Stop, the stopped one would have it too.
	var barrier collector
	bsub, err := e.c.SubscribeEvents(ctx, barrier.add)
	require.NoError(t, err)
	defer bsub.Stop()
	_, _, err = e.c.Acquire(ctx, model.AcquireRequest{PoolName: "ev"})
	require.NoError(t, err)
	barrier.waitFor(t, model.EventAcquireFailed) // the only proxy is slow now
	require.Len(t, col.names(), 5, "nothing after Stop")
}

func TestOnAcquireOnRelease(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "cb", 2, 1)
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var acquired, failed, released []string
	subA, err := e.c.OnAcquire(ctx, func(ev model.AcquireEvent) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Lease == nil {
			failed = append(failed, ev.PoolName)
		} else {
			acquired = append(acquired, ev.Lease.ID)
		}
	})
	require.NoError(t, err)
	subR, err := e.c.OnRelease(ctx, func(ev model.ReleaseEvent) {
		mu.Lock()
		defer mu.Unlock()
		released = append(released, ev.Lease.ID)
	})
	require.NoError(t, err)

	err = e.c.WithLease(ctx, model.AcquireRequest{PoolName: "cb"}, func(context.Context, model.Lease, model.Proxy) error { return nil })
	require.NoError(t, err)
	_, _, err = e.c.Acquire(ctx, model.AcquireRequest{PoolName: "cb", Filters: &model.ProxyFilters{Country: ptr("ZZ")}})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acquired) == 1 && len(failed) == 1 && len(released) == 1
	}, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	require.Equal(t, acquired, released)
	require.Equal(t, []string{"cb"}, failed)
	mu.Unlock()

	cancel() // ends both subscriptions
	<-subA.Done()
	<-subR.Done()
}

// TestReplaySince reads what PHAROX_EVENTS kept from a start time, then goes
// on live with the same ordered consumer.
func TestReplaySince(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "rp", 1, 1)
	// An event before the start time is not replayed.
	early, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "rp"})
	require.NoError(t, err)
	_, err = e.c.Release(ctx, model.ReleaseRequest{LeaseID: early.ID})
	require.NoError(t, err)
	require.NoError(t, e.w.Events.Flush(ctx))
	// The replay starts just after the last event stored so far, by the
	// stream's own clock.
	js, err := jetstream.New(e.nc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	since := info.State.LastTime.Add(time.Nanosecond)

	lease, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "rp"})
	require.NoError(t, err)
	_, err = e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	require.NoError(t, err)
	require.NoError(t, e.w.Events.Flush(ctx))

	var col collector
	sub, err := e.c.SubscribeEvents(ctx, col.add, client.WithReplaySince(since))
	require.NoError(t, err)
	defer sub.Stop()
	evs := col.waitFor(t, model.EventAcquired, model.EventReleased)
	require.Equal(t, lease.ID, evs[0].Lease().ID)
	require.NotZero(t, evs[0].Sequence)
	require.Greater(t, evs[1].Sequence, evs[0].Sequence)

	// Then live.
	live, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "rp"})
	require.NoError(t, err)
	evs = col.waitFor(t, model.EventAcquired, model.EventReleased, model.EventAcquired)
	require.Equal(t, live.ID, evs[2].Lease().ID)

	// OnRelease with replay only sees released events.
	var relMu sync.Mutex
	var rel []string
	subR, err := e.c.OnRelease(ctx, func(ev model.ReleaseEvent) {
		relMu.Lock()
		rel = append(rel, ev.Lease.ID)
		relMu.Unlock()
	}, client.WithReplaySince(since))
	require.NoError(t, err)
	defer subR.Stop()
	require.Eventually(t, func() bool {
		relMu.Lock()
		defer relMu.Unlock()
		return len(rel) == 1
	}, 5*time.Second, 10*time.Millisecond)
	relMu.Lock()
	require.Equal(t, []string{lease.ID}, rel)
	relMu.Unlock()
}
