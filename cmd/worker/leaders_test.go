package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
)

// TestSpreadLeadersCommand runs worker spread-leaders on a 3-node cluster
// with --shards 3 --replicas 3: it creates the buckets and spreads their
// leaders; after an operator moved them all to one node it spreads them
// again with two step-downs and says so; without --nats-url it refuses.
func TestSpreadLeadersCommand(t *testing.T) {
	c := natstest.RunCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	args := []string{"--nats-url", c.URLs(), "--shards", "3", "--replicas", "3"}
	cfg, err := parseWith(newSpreadLeadersFlagSet, args, envMap(nil))
	require.NoError(t, err)
	leaders := func() []string {
		var out []string
		for i := 0; i < 3; i++ {
			n, err := c.StreamLeader(ctx, kvstore.ProxiesStreamName(i, 3))
			require.NoError(t, err)
			out = append(out, n.Name())
		}
		return out
	}

	log, sink := newLogSink(zapcore.InfoLevel)
	var out bytes.Buffer
	p, err := runSpreadLeaders(ctx, cfg, log, &out)
	require.NoError(t, err, sink.String())
	require.True(t, p.Balanced, out.String())
	require.ElementsMatch(t, []string{"n1", "n2", "n3"}, leaders())

	for i := 0; i < 3; i++ {
		require.NoError(t, c.MoveStreamLeader(ctx, kvstore.ProxiesStreamName(i, 3), c.Node("n3")))
	}
	out.Reset()
	p, err = runSpreadLeaders(ctx, cfg, log, &out)
	require.NoError(t, err, sink.String())
	require.Equal(t, 2, p.StepDowns)
	require.ElementsMatch(t, []string{"n1", "n2", "n3"}, leaders())
	require.Contains(t, out.String(), "spread: moved KV_PHAROX_PROXIES_0 n3->n1, KV_PHAROX_PROXIES_1 n3->n2 (2 step-downs in ")
	require.Contains(t, out.String(), "KV_PHAROX_PROXIES_2\tn3\n")
	t.Logf("worker spread-leaders:\n%s", out.String())

	cfg, err = parseWith(newSpreadLeadersFlagSet, []string{"--shards", "3"}, envMap(nil))
	require.NoError(t, err)
	_, err = runSpreadLeaders(ctx, cfg, log, &out)
	require.ErrorContains(t, err, "needs --nats-url")
}
