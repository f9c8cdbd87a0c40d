package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/natscluster"
)

// Cluster is a NATS cluster with JetStream on loopback (internal/natscluster).
type Cluster = natscluster.Cluster

// RunCluster starts a 3-node JetStream cluster in this process (random
// ports, stores in the test's temporary directory) and waits until it has
// a meta leader that sees every node current; it is shut down with the
// test. A node's Stop is a graceful shutdown: the streams it led elect a
// new leader in ~250 ms.
func RunCluster(t testing.TB) *Cluster {
	t.Helper()
	return runCluster(t, false)
}

// RunClusterProcesses is RunCluster with each node in a child process of
// the test binary, so that a node can be killed with SIGKILL (Node.Kill):
// a stream it led stays without a leader for 4-9 s. The package's TestMain
// must call RunNodeIfAsked first.
func RunClusterProcesses(t testing.TB) *Cluster {
	t.Helper()
	return runCluster(t, true)
}

func runCluster(t testing.TB, processes bool) *Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := natscluster.Start(ctx, natscluster.Config{Nodes: 3, Dir: t.TempDir(), Processes: processes})
	if err != nil {
		t.Fatalf("NATS cluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// RunNodeIfAsked turns the test binary into a cluster node when
// RunClusterProcesses started it as one; call it first in TestMain.
func RunNodeIfAsked() { natscluster.RunNodeIfAsked() }

// ConnectCluster opens a client connection to every node of c (it moves to
// another node when its own goes away), closed with the test.
func ConnectCluster(t testing.TB, c *Cluster) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.Timeout(10*time.Second),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StreamLeaders returns the names of the nodes that lead streams now, in
// order, waiting (within ctx) for each to have a leader; t fails when one
// has none.
func StreamLeaders(ctx context.Context, t testing.TB, c *Cluster, streams ...string) []string {
	t.Helper()
	out := make([]string, len(streams))
	for i, st := range streams {
		n, err := c.StreamLeader(ctx, st)
		if err != nil {
			t.Fatalf("leader of %s: %v", st, err)
		}
		out[i] = n.Name()
	}
	return out
}
