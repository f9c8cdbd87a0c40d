package manager

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
)

// newClusterEnv is newEnv on a 3-node cluster with R3 buckets; the
// workers' connections reach every node.
func newClusterEnv(t *testing.T) *env {
	t.Helper()
	c := natstest.RunCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, clock: newFakeClock(), replicas: 3, cluster: c,
		connect: func() *nats.Conn { return natstest.ConnectCluster(t, c) }}
}

// leaderChange hands the leadership of the proxies stream and of the
// ending records' stream to another node (a stepdown), and waits until
// they have their new leaders; on one server it does nothing. Cases call
// it between a write and what must see it.
func (e *env) leaderChange() {
	e.t.Helper()
	if e.cluster == nil {
		return
	}
	nodes := e.cluster.Nodes()
	for _, stream := range []string{kvstore.ProxiesStream, "KV_" + kvstore.LeasesBucket} {
		leader, err := e.cluster.StreamLeader(e.ctx, stream)
		if err != nil {
			e.t.Fatal(err)
		}
		next := nodes[0]
		for i, n := range nodes {
			if n == leader {
				next = nodes[(i+1)%len(nodes)]
			}
		}
		if err := e.cluster.MoveStreamLeader(e.ctx, stream, next); err != nil {
			e.t.Fatal(err)
		}
	}
}

// The cases of the suite whose writes and reads must hold across a leader
// change, on a 3-node cluster with R3 buckets; each changes the leaders of
// the proxies and lease-record streams between its steps (leaderChange).
// The others run on one server only (TestStorageContract), to stay within
// the suite's time.
func TestStorageContractClusterR3(t *testing.T) {
	cases := map[string]bool{
		"concurrency limits": true, "release cycle": true, "expiry": true, "renew": true,
		"fencing tokens increase": true, "ending record written late or never": true,
		"delete proxy": true, "mutate proxy under contention": true,
	}
	ran := 0
	for _, c := range contractCases {
		if !cases[c.name] {
			continue
		}
		ran++
		t.Run(c.name, func(t *testing.T) { c.run(t, newClusterEnv) })
	}
	if ran != len(cases) {
		t.Fatalf("ran %d of the %d cases named: a case was renamed", ran, len(cases))
	}
}
