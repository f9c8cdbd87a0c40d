package gateway

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestKeptConnsIdle: at most maxIdlePerTarget idle connections per target
// are kept (the rest closed, as MaxIdleConnsPerHost did), one idle for
// sessionIdle is closed and forgotten, one taken back in use is not, and
// once the session leaves its proxy every idle connection is closed and
// any given back later too.
func TestKeptConnsIdle(t *testing.T) {
	t.Parallel()
	g, err := New(stubLeaser{})
	require.NoError(t, err)
	kc := g.keptConns(model.Proxy{Host: "127.0.0.1", Port: 1, Protocol: model.ProtocolSOCKS5})
	conn := func(key string) (*keptConn, net.Conn) {
		t.Helper()
		ours, theirs := net.Pipe()
		t.Cleanup(func() { _ = theirs.Close() })
		return &keptConn{conn: ours, key: key}, theirs
	}
	closed := func(peer net.Conn) bool {
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := peer.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}

	var peers []net.Conn
	var first *keptConn
	for i := range maxIdlePerTarget + 1 {
		c, peer := conn("a:80")
		if i == 0 {
			first = c
		}
		kc.put(c)
		peers = append(peers, peer)
	}
	require.Len(t, kc.idle["a:80"], maxIdlePerTarget)
	require.True(t, closed(peers[maxIdlePerTarget]), "one more than the bound is closed")
	other, otherPeer := conn("b:80")
	kc.put(other)
	require.Len(t, kc.idle["b:80"], 1, "the bound is per target")

	kc.expire(first)
	require.True(t, closed(peers[0]))
	require.Len(t, kc.idle["a:80"], maxIdlePerTarget-1)
	require.NotContains(t, kc.idle["a:80"], first)

	got, reused, err := kc.get(t.Context(), "b:80")
	require.NoError(t, err)
	require.True(t, reused)
	require.Same(t, other, got)
	kc.expire(got) // its timer fired as it was taken: in use, it stays open
	require.False(t, got.idle)

	kc.closeIdle()
	require.Empty(t, kc.idle)
	for _, peer := range peers[1:maxIdlePerTarget] {
		require.True(t, closed(peer))
	}
	kc.put(got)
	require.True(t, closed(otherPeer), "given back after the session left its proxy: closed")
	require.Empty(t, kc.idle)
}
