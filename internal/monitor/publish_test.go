package monitor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// TestPublishFailuresAreCounted: with the events stream gone, a grant's
// events cannot be stored; each failed attempt is counted, and once the
// stream is back the event is stored and the count stops growing.
func TestPublishFailuresAreCounted(t *testing.T) {
	nc, w, base := startMonitored(t, worker.Config{})
	ctx := t.Context()
	c := client.New(nc, client.WithTimeout(timeout))
	poolWithProxy(t, c, "p", 3128)
	require.NoError(t, w.Events.Flush(ctx))
	failures := func() float64 {
		v, ok := value(scrape(t, base), "pharox_event_publish_failures_total", nil)
		require.True(t, ok)
		return v
	}
	require.Zero(t, failures())

	js, err := nc.JetStream()
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(events.StreamName))
	lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "p"})
	require.NoError(t, err, "the grant commits; its event waits for the stream")
	require.NotNil(t, lease)
	deadline := time.Now().Add(timeout)
	for failures() == 0 {
		require.True(t, time.Now().Before(deadline), "no failed publish counted")
		time.Sleep(20 * time.Millisecond) // polling a counter that has no event to wait on
	}

	// The stream back, the retried publish is stored.
	pub, err := events.New(ctx, nc)
	require.NoError(t, err)
	require.NoError(t, pub.Close(ctx))
	require.NoError(t, w.Events.Flush(ctx))
	settled := failures()
	stream, err := js.StreamInfo(events.StreamName)
	require.NoError(t, err)
	require.EqualValues(t, 1, stream.State.Msgs, "the acquired event, stored once")
	require.Equal(t, settled, failures())
}
