package natscluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natscluster"
	"github.com/pharox/pharox-nats/internal/natstest"
)

func TestMain(m *testing.M) {
	natscluster.RunNodeIfAsked()
	os.Exit(m.Run())
}

// counter is an R3 KV bucket with one key that the tests update with
// revision checks: a write acknowledged by the cluster must survive any
// one node going away and coming back.
type counter struct {
	kv  jetstream.KeyValue
	rev uint64
	n   int
}

func newCounter(t *testing.T, ctx context.Context, nc *nats.Conn) *counter {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "COUNTER", Replicas: 3})
	require.NoError(t, err)
	rev, err := kv.Create(ctx, "n", []byte{0})
	require.NoError(t, err)
	return &counter{kv: kv, rev: rev}
}

// inc makes one revision-checked increment, retrying through an election
// until ctx ends; it returns when the increment is acknowledged.
func (c *counter) inc(ctx context.Context) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		rev, err := c.kv.Update(actx, "n", []byte{byte(c.n + 1)}, c.rev)
		cancel()
		if err == nil {
			c.rev, c.n = rev, c.n+1
			return nil
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// A write whose answer was lost in the election did land.
			e, gerr := c.kv.Get(ctx, "n")
			if gerr == nil && e.Revision() > c.rev && int(e.Value()[0]) == c.n+1 {
				c.rev, c.n = e.Revision(), c.n+1
				return nil
			}
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderValue reads the counter from the stream's leader, retrying through
// an election. A KV Get is a direct get, which any replica may answer, one
// still applying the last acknowledged write included (a CI run read 2
// after the third increment was acknowledged); the JetStream API's message
// get is answered by the leader, which has every acknowledged write.
func (c *counter) leaderValue(t *testing.T, ctx context.Context, nc *nats.Conn) byte {
	t.Helper()
	for {
		msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_COUNTER", []byte(`{"last_by_subj":"$KV.COUNTER.n"}`))
		if err == nil {
			var resp struct {
				Error   *struct{ Description string } `json:"error"`
				Message *struct{ Data []byte }        `json:"message"`
			}
			require.NoError(t, json.Unmarshal(msg.Data, &resp))
			if resp.Message != nil {
				require.Len(t, resp.Message.Data, 1)
				return resp.Message.Data[0]
			}
			err = errors.New("no message")
			if resp.Error != nil {
				err = errors.New(resp.Error.Description)
			}
		}
		if ctx.Err() != nil {
			require.NoError(t, err, "read the counter from the leader")
		}
		time.Sleep(50 * time.Millisecond) // polling an election, which has no event to wait on
	}
}

func TestInProcessClusterStopAndRestart(t *testing.T) {
	c := natstest.RunCluster(t)
	require.Len(t, c.Nodes(), 3)
	nc := natstest.ConnectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr := newCounter(t, ctx, nc)

	leader, err := c.StreamLeader(ctx, "KV_COUNTER")
	require.NoError(t, err)
	require.NoError(t, ctr.inc(ctx))
	stopped := time.Now()
	require.NoError(t, leader.Stop())
	require.False(t, leader.Running())
	require.NoError(t, ctr.inc(ctx))
	t.Logf("graceful stop of the stream leader %s: next write acknowledged after %v", leader.Name(), time.Since(stopped).Round(time.Millisecond))
	next, err := c.StreamLeader(ctx, "KV_COUNTER")
	require.NoError(t, err)
	require.NotEqual(t, leader.Name(), next.Name(), "a stopped node leads nothing")

	require.NoError(t, leader.Restart(ctx))
	require.NoError(t, c.WaitReady(ctx))
	require.NoError(t, c.WaitStreamsCurrent(ctx))
	require.NoError(t, ctr.inc(ctx))

	// The restarted node has every acknowledged write: stop the two others
	// one at a time and read from it.
	for _, n := range c.Nodes() {
		if n == leader {
			continue
		}
		require.NoError(t, n.Stop())
		require.NoError(t, n.Restart(ctx))
		require.NoError(t, c.WaitReady(ctx))
		require.NoError(t, c.WaitStreamsCurrent(ctx))
	}
	require.Equal(t, byte(3), ctr.leaderValue(t, ctx, nc))
}

func TestChildProcessClusterKill(t *testing.T) {
	c := natstest.RunClusterProcesses(t)
	nc := natstest.ConnectCluster(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctr := newCounter(t, ctx, nc)
	for _, n := range c.Nodes() {
		require.NotEqual(t, os.Getpid(), n.PID(), "node %s runs in a process of its own", n.Name())
	}

	leader, err := c.StreamLeader(ctx, "KV_COUNTER")
	require.NoError(t, err)
	require.NoError(t, ctr.inc(ctx))
	killed := time.Now()
	require.NoError(t, leader.Kill())
	require.NoError(t, ctr.inc(ctx))
	gap := time.Since(killed)
	t.Logf("SIGKILL of the stream leader %s: next write acknowledged after %v", leader.Name(), gap.Round(time.Millisecond))
	next, err := c.StreamLeader(ctx, "KV_COUNTER")
	require.NoError(t, err)
	require.NotEqual(t, leader.Name(), next.Name())

	require.NoError(t, leader.Restart(ctx))
	require.NoError(t, c.WaitReady(ctx))
	require.NoError(t, c.WaitStreamsCurrent(ctx))
	require.NoError(t, ctr.inc(ctx))
	require.Equal(t, byte(3), ctr.leaderValue(t, ctx, nc), "no acknowledged write lost")
}

func TestConfigRefused(t *testing.T) {
	ctx := context.Background()
	_, err := natscluster.Start(ctx, natscluster.Config{Nodes: -1, Dir: t.TempDir()})
	require.ErrorContains(t, err, "Nodes must be positive")
	_, err = natscluster.Start(ctx, natscluster.Config{})
	require.ErrorContains(t, err, "Dir is required")
	c := natstest.RunCluster(t)
	require.ErrorContains(t, c.Nodes()[0].Kill(), "only a node in a child process can be killed")
}
