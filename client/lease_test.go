package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

func TestWithLeaseReleasesAfterSuccess(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	var leaseID string
	err := e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl", ConsumerName: ptr("bot")},
		func(ctx context.Context, lease model.Lease, proxy model.Proxy) error {
			leaseID = lease.ID
			require.Equal(t, "http://10.0.0.1:3000", proxy.URL)
			got, err := e.c.Lease(ctx, lease.ID)
			require.NoError(t, err)
			require.Equal(t, model.LeaseActive, got.Status)
			return nil
		})
	require.NoError(t, err)
	requireReleased(t, e, leaseID)
}

func TestWithLeaseReleasesOnError(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	boom := errors.New("scrape failed")
	var leaseID string
	err := e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl"}, func(_ context.Context, lease model.Lease, _ model.Proxy) error {
		leaseID = lease.ID
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, boom, err, "fn's error comes back as it is")
	requireReleased(t, e, leaseID)
}

func TestWithLeaseReleasesOnPanic(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	var leaseID string
	func() {
		defer func() {
			r := recover()
			require.Equal(t, "kaboom", r, "the panic goes on after the release")
		}()
		_ = e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl"}, func(_ context.Context, lease model.Lease, _ model.Proxy) error {
			leaseID = lease.ID
			panic("kaboom")
		})
		t.Fatal("not reached")
	}()
	requireReleased(t, e, leaseID)
}

func TestWithLeaseReleasesOnCancel(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	ctx, cancel := context.WithCancel(ctx)
	var leaseID string
	err := e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl"}, func(ctx context.Context, lease model.Lease, _ model.Proxy) error {
		leaseID = lease.ID
		cancel() // the caller gives up while fn runs
		<-ctx.Done()
		return ctx.Err()
	})
	require.ErrorIs(t, err, context.Canceled)
	requireReleased(t, e, leaseID)
}

func TestWithLeaseNoProxyAvailable(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	called := false
	err := e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl"}, func(ctx context.Context, _ model.Lease, _ model.Proxy) error {
		return e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl"}, func(context.Context, model.Lease, model.Proxy) error {
			called = true
			return nil
		})
	})
	require.ErrorIs(t, err, model.ErrNoProxyAvailable)
	require.Contains(t, err.Error(), `"wl"`)
	require.False(t, called)

	err = e.c.WithLease(ctx, model.AcquireRequest{PoolName: "nope"}, func(context.Context, model.Lease, model.Proxy) error { return nil })
	require.ErrorIs(t, err, model.ErrPoolNotFound)
}

// TestWithLeaseRenewsLongRunningFn keeps fn running on a 2 s lease until
// WithLease has renewed it (every half of its duration), then moves the
// workers' clock past the original expiry: the lease is still active, nobody
// else can take the proxy, and it is released when fn returns.
func TestWithLeaseRenewsLongRunningFn(t *testing.T) {
	t.Parallel()
	clock := workertest.NewClock()
	e, ctx, _ := newPoolEnvWith(t, workertest.Config{Clock: clock.Now}, "wl", 1, 1)
	renewed := make(chan model.RenewedEvent, 4)
	sub, err := e.c.SubscribeEvents(ctx, func(ev client.Event) { renewed <- *ev.Renewed }, client.WithEventNames(model.EventRenewed))
	require.NoError(t, err)
	defer sub.Stop()
	var leaseID string
	err = e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl", DurationSeconds: ptr(2)},
		func(ctx context.Context, lease model.Lease, _ model.Proxy) error {
			leaseID = lease.ID
			clock.Advance(time.Second) // the workers' time passes as the client's does
			select {
			case ev := <-renewed:
				require.Equal(t, lease.ID, ev.Lease.ID)
			case <-ctx.Done():
				return ctx.Err()
			}
			clock.Advance(1200 * time.Millisecond) // past the original expires_at
			got, err := e.c.Lease(ctx, lease.ID)
			require.NoError(t, err)
			require.Equal(t, model.LeaseActive, got.Status)
			require.True(t, got.ExpiresAt.After(lease.ExpiresAt), "renewed: %s > %s", got.ExpiresAt, lease.ExpiresAt)
			// Nobody else can take the proxy meanwhile.
			other, _, err := e.c.Acquire(ctx, model.AcquireRequest{PoolName: "wl"})
			require.NoError(t, err)
			require.Nil(t, other)
			return ctx.Err()
		})
	require.NoError(t, err)
	requireReleased(t, e, leaseID)
}

// TestWithLeaseCancelsFnWhenRenewFails ends the lease behind WithLease's
// back: the next renewal fails, fn's ctx is cancelled with that cause and
// WithLease reports it.
func TestWithLeaseCancelsFnWhenRenewFails(t *testing.T) {
	t.Parallel()
	e, ctx, _ := newPoolEnv(t, "wl", 1, 1)
	start := time.Now()
	err := e.c.WithLease(ctx, model.AcquireRequest{PoolName: "wl", DurationSeconds: ptr(2)},
		func(ctx context.Context, lease model.Lease, _ model.Proxy) error {
			_, err := e.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
			require.NoError(t, err)
			select {
			case <-ctx.Done():
				require.ErrorIs(t, context.Cause(ctx), model.ErrLeaseNotActive)
				return ctx.Err()
			case <-time.After(5 * time.Second):
				return errors.New("fn was not cancelled")
			}
		})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, model.ErrLeaseNotActive)
	require.Less(t, time.Since(start), 3*time.Second, "cancelled at the first renewal, after about 1 s")
}

func requireReleased(t testing.TB, e *env, leaseID string) model.Lease {
	t.Helper()
	require.NotEmpty(t, leaseID)
	l, err := e.c.Lease(ctxT(t), leaseID)
	require.NoError(t, err)
	require.Equal(t, model.LeaseReleased, l.Status)
	require.NotNil(t, l.ReleasedAt)
	return l
}
