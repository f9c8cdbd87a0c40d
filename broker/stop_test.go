package broker_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
)

// TestStopAnswersRequestsInFlight: Stop stops taking requests but answers
// the one in flight (waiting for it), then stops answering $SRV; a Stop
// whose ctx ends first says so, and may be called again.
func TestStopAnswersRequestsInFlight(t *testing.T) {
	srv := natstest.RunServer(t)
	w := workertest.Start(t, natstest.Connect(t, srv), workertest.Config{})
	bnc, cnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	hc := &blockingChecker{entered: make(chan struct{}, 4), release: make(chan struct{})}
	brk, err := broker.Start(bnc, w.Manager, broker.WithPrefix("stop"), broker.WithHealthChecker(hc))
	require.NoError(t, err)
	require.NoError(t, bnc.Flush())
	id := brk.Info().ID

	replies, err := cnc.SubscribeSync(nats.NewInbox())
	require.NoError(t, err)
	require.NoError(t, cnc.PublishRequest("stop.admin.health.check", replies.Subject, []byte(`{"pool_name":"x"}`)))
	<-hc.entered

	// A Stop whose ctx has ended says so; a later one waits again.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, brk.Stop(ended), context.Canceled)

	stopped := make(chan error, 1)
	go func() { stopped <- brk.Stop(context.Background()) }()
	// The endpoints no longer take requests while the one in flight runs
	// (the first Stop sent the drain; this flush makes sure the server has
	// it).
	require.NoError(t, bnc.Flush())
	_, err = cnc.Request("stop.stats", []byte(`{"pool_name":"x"}`), requestTimeout)
	require.ErrorIs(t, err, nats.ErrNoResponders)
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) with a request in flight", err)
	default:
	}

	close(hc.release)
	msg, err := replies.NextMsg(requestTimeout)
	require.NoError(t, err)
	require.Empty(t, msg.Header.Get(micro.ErrorCodeHeader), string(msg.Data))
	require.NoError(t, <-stopped)

	subject, err := micro.ControlSubject(micro.PingVerb, broker.ServiceName, id)
	require.NoError(t, err)
	_, err = cnc.Request(subject, nil, requestTimeout)
	require.ErrorIs(t, err, nats.ErrNoResponders, "a stopped broker answers no $SRV")
}
