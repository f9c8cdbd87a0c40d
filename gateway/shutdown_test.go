package gateway_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/proxytest"
)

// TestShutdown: Shutdown stops accepting, lets a tunnel finish within the
// drain timeout, closes the ones still open after it, and every lease of
// the gateway's own is released.
func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	echo := proxytest.Echo(t)
	e.httpPool("drain", 0)

	// A tunnel that ends within the drain timeout: Shutdown waits for it.
	w := e.gateway()
	conn, br, leaseID := connectTunnel(t, w, "pool=drain", echo)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- w.g.Shutdown(ctx)
	}()
	// New connections are refused once it has begun; the tunnel goes on.
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", w.httpAddr)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "the listener closes")
	echoOnce(t, conn, br, "draining")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a tunnel open", err)
	default:
	}
	require.NoError(t, conn.Close())
	require.NoError(t, <-done)
	e.released(leaseID)

	// A tunnel still open at the drain timeout is closed, its lease released.
	w = e.gateway()
	conn, br, leaseID = connectTunnel(t, w, "pool=drain", echo)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, w.g.Shutdown(ctx), context.DeadlineExceeded)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := br.ReadByte()
	require.ErrorIs(t, err, io.EOF)
	e.released(leaseID)
	require.Zero(t, e.stats("drain").TotalLeases)
}
