package health

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
)

// newBucket creates the bucket cfg describes on a server of the test's own,
// as the checker creates its buckets.
func newBucket(t *testing.T, cfg jetstream.KeyValueConfig) jetstream.KeyValue {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := kvstore.EnsureBucket(context.Background(), js, cfg)
	require.NoError(t, err)
	return kv
}

// TestClaims: one Create wins a slot, a released claim can be won again,
// and claims lapse with their TTL.
func TestClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &claims{kv: newBucket(t, jetstream.KeyValueConfig{Bucket: ClaimsBucket, History: 1,
		Storage: jetstream.MemoryStorage, LimitMarkerTTL: time.Second})}

	rev, won, err := c.claim(ctx, "p1", 7, 2*time.Second, "a")
	require.NoError(t, err)
	require.True(t, won)
	_, won, err = c.claim(ctx, "p1", 7, 2*time.Second, "b")
	require.NoError(t, err)
	require.False(t, won, "the slot is taken")
	_, won, err = c.claim(ctx, "p1", 8, 2*time.Second, "b")
	require.NoError(t, err)
	require.True(t, won, "the next slot is another key")

	require.NoError(t, c.release(ctx, "p1", 7, rev, 2*time.Second))
	_, won, err = c.claim(ctx, "p1", 7, time.Second, "b")
	require.NoError(t, err)
	require.True(t, won, "a released slot can be claimed again")
	require.Error(t, c.release(ctx, "p1", 7, rev, time.Second), "only the claim created at rev is released")

	require.Eventually(t, func() bool {
		_, won, err := c.claim(ctx, "p1", 8, time.Second, "c")
		require.NoError(t, err)
		return won
	}, 5*time.Second, 100*time.Millisecond, "a claim lapses with its TTL")

	require.Equal(t, 3*time.Second, claimTTL(500*time.Millisecond))
	require.Equal(t, 4*time.Second, claimTTL(time.Second))
	require.Equal(t, 122*time.Second, claimTTL(time.Minute))
}

// TestCounters: consecutive failures count up, a success resets them,
// concurrent checks all count.
func TestCounters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &counters{kv: newBucket(t, jetstream.KeyValueConfig{Bucket: CountersBucket, History: 1})}
	now := time.Now()

	n, err := c.record(ctx, "p", false, now)
	require.NoError(t, err)
	require.Equal(t, 0, n)
	for want := 1; want <= 3; want++ {
		n, err = c.record(ctx, "p", true, now)
		require.NoError(t, err)
		require.Equal(t, want, n)
	}
	n, err = c.record(ctx, "p", false, now)
	require.NoError(t, err)
	require.Equal(t, 0, n)
	n, err = c.failures(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 0, n)
	n, err = c.record(ctx, "p", true, now)
	require.NoError(t, err)
	require.Equal(t, 1, n, "counting starts over after a success")

	// 16 failures recorded at once by "16 workers" all count.
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := c.record(ctx, "q", true, now)
			errs <- err
		}()
	}
	for range 16 {
		require.NoError(t, <-errs)
	}
	n, err = c.failures(ctx, "q")
	require.NoError(t, err)
	require.Equal(t, 16, n)
}

func TestSlots(t *testing.T) {
	t.Parallel()
	iv := time.Second
	ph := phaseOf("some-proxy", iv)
	require.Less(t, ph, iv)
	at := time.Unix(1_700_000_000, 0)
	slot, start := slotOf(iv, ph, at)
	require.False(t, start.After(at))
	require.True(t, start.Add(iv).After(at))
	next, nextStart := slotOf(iv, ph, start.Add(iv))
	require.Equal(t, slot+1, next)
	require.Equal(t, start.Add(iv), nextStart)
	require.Equal(t, start, slotStart(iv, ph, slot))
	// Phases spread proxies over the interval.
	seen := map[int64]bool{}
	for i := range 100 {
		seen[int64(phaseOf(string(rune('a'+i%26))+string(rune('a'+i/26)), iv)/(100*time.Millisecond))] = true
	}
	require.GreaterOrEqual(t, len(seen), 8, "phases fall in most tenths of the interval")
}
