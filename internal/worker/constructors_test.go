package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
)

// TestConstructorsRefuseBadOptions gives every constructor of a worker's
// parts an option value that cannot work: each returns an error naming the
// option, before it creates or subscribes anything.
func TestConstructorsRefuseBadOptions(t *testing.T) {
	_, nc := runServer(t)
	ctx := t.Context()
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	type build func() error
	kv := func(opts ...kvstore.Option) build {
		return func() error { _, err := kvstore.Open(ctx, nc, opts...); return err }
	}
	ev := func(opts ...events.Option) build {
		return func() error { _, err := events.New(ctx, nc, opts...); return err }
	}
	cases := []struct {
		name  string
		build build
		want  string
	}{
		{"kvstore no replicas", kv(kvstore.WithReplicas(0)), "WithReplicas must be 1..5, got 0"},
		{"kvstore six replicas", kv(kvstore.WithReplicas(6)), "WithReplicas must be 1..5, got 6"},
		{"kvstore no lease history", kv(kvstore.WithLeaseHistory(0)), "WithLeaseHistory must be positive"},
		{"kvstore nil logger", kv(kvstore.WithLogger(nil)), "WithLogger"},
		{"kvstore nil clock", kv(kvstore.WithClock(nil)), "WithClock"},
		{"events empty prefix", ev(events.WithPrefix("")), "WithPrefix"},
		{"events wildcard prefix", ev(events.WithPrefix("pharox.*")), "WithPrefix"},
		{"events no replicas", ev(events.WithReplicas(0)), "WithReplicas must be 1..5, got 0"},
		{"events negative age", ev(events.WithRetention(-time.Hour, 1<<20)), "WithRetention max age"},
		{"events no bytes", ev(events.WithRetention(time.Hour, 0)), "WithRetention max bytes"},
		{"events nil logger", ev(events.WithLogger(nil)), "WithLogger"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.build()
			require.ErrorContains(t, err, tc.want)
		})
	}
	// Nothing was created by the refused calls.
	for _, name := range []string{"KV_" + kvstore.PoolsBucket, "KV_" + kvstore.ProxiesBucket, events.StreamName} {
		_, err := js.Stream(ctx, name)
		require.ErrorIs(t, err, jetstream.ErrStreamNotFound, name)
	}

	// The manager, the health checker and the broker need a store.
	store, err := kvstore.Open(ctx, nc)
	require.NoError(t, err)
	mg := func(opts ...manager.Option) build {
		return func() error {
			m, err := manager.New(ctx, store, opts...)
			if m != nil {
				m.Close()
			}
			return err
		}
	}
	mgr, err := manager.New(ctx, store)
	require.NoError(t, err)
	t.Cleanup(mgr.Close)
	hc := func(opts ...health.Option) build {
		return func() error { _, err := health.New(ctx, nc, mgr, opts...); return err }
	}
	subsBefore := nc.NumSubscriptions()
	bk := func(opts ...broker.Option) build {
		return func() error {
			b, err := broker.Start(nc, mgr, opts...)
			if b != nil {
				_ = b.Stop(ctx)
			}
			return err
		}
	}
	cases = []struct {
		name  string
		build build
		want  string
	}{
		{"manager no max duration", mg(manager.WithMaxDuration(0)), "WithMaxDuration must be 1s..24h, got 0s"},
		{"manager negative max duration", mg(manager.WithMaxDuration(-time.Hour)), "WithMaxDuration"},
		{"manager max duration under a second", mg(manager.WithMaxDuration(500 * time.Millisecond)), "WithMaxDuration"},
		{"manager max duration over a day", mg(manager.WithMaxDuration(25 * time.Hour)), "WithMaxDuration"},
		{"manager nil logger", mg(manager.WithLogger(nil)), "WithLogger"},
		{"manager negative grace", mg(manager.WithExpiryGrace(-time.Second)), "WithExpiryGrace must not be negative"},
		{"health no concurrency", hc(health.WithConcurrency(0)), "WithConcurrency must be at least 1, got 0"},
		{"health no replicas", hc(health.WithReplicas(0)), "WithReplicas must be 1..5"},
		{"health no tick", hc(health.WithSchedule(0, time.Second)), "WithSchedule"},
		{"health nil logger", hc(health.WithLogger(nil)), "WithLogger"},
		// Today's two traps: zero slots made every request wait forever, a
		// zero timeout answered every request 503.
		{"broker no in-flight slots", bk(broker.WithMaxInflight(0)), "WithMaxInflight must be at least 1, got 0"},
		{"broker zero timeout", bk(broker.WithRequestTimeout(0)), "WithRequestTimeout must be positive, got 0s"},
		{"broker negative timeout", bk(broker.WithRequestTimeout(-time.Second)), "WithRequestTimeout must be positive"},
		{"broker wildcard prefix", bk(broker.WithPrefix(">")), "WithPrefix"},
		{"broker nil logger", bk(broker.WithLogger(nil)), "WithLogger"},
		{"broker half a pending limit", bk(broker.WithPendingLimits(10, 0)), "WithPendingLimits"},
		{"broker negative pending limit", bk(broker.WithPendingLimits(-5, -1)), "WithPendingLimits"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorContains(t, tc.build(), tc.want)
		})
	}
	require.Equal(t, subsBefore, nc.NumSubscriptions(), "a refused broker subscribes nothing")
	for _, name := range []string{"KV_" + health.ClaimsBucket, "KV_" + health.CountersBucket} {
		_, err := js.Stream(ctx, name)
		require.ErrorIs(t, err, jetstream.ErrStreamNotFound, name)
	}

	// Several bad options are named together.
	_, err = kvstore.Open(ctx, nc, kvstore.WithReplicas(0), kvstore.WithLeaseHistory(-1))
	require.ErrorContains(t, err, "WithReplicas")
	require.ErrorContains(t, err, "WithLeaseHistory")

	// And good ones still work.
	b, err := broker.Start(nc, mgr, broker.WithPrefix("ok"), broker.WithPendingLimits(100, -1))
	require.NoError(t, err)
	require.NoError(t, b.Stop(ctx))
	require.NoError(t, nc.Flush())
	_, err = nc.Request("ok.stats", nil, 200*time.Millisecond)
	require.True(t, errors.Is(err, nats.ErrNoResponders), "a stopped broker answers nothing: %v", err)
	pub, err := events.New(ctx, nc, events.WithRetention(0, -1))
	require.NoError(t, err, "0 age and -1 bytes are JetStream's unlimited")
	require.NoError(t, pub.Close(ctx))
}
