package main

import (
	"bytes"
	"context"
	"fmt"
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
	streams := []string{kvstore.ProxiesStreamName(0, 3), kvstore.ProxiesStreamName(1, 3), kvstore.ProxiesStreamName(2, 3)}
	leaders := func() []string { return natstest.StreamLeaders(ctx, t, c, streams...) }

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
	require.GreaterOrEqual(t, p.StepDowns, 2) // more only if a step-down went elsewhere than it named
	now := leaders()
	require.ElementsMatch(t, []string{"n1", "n2", "n3"}, now)
	for i, leader := range now {
		require.Contains(t, out.String(), kvstore.ProxiesStreamName(i, 3)+"\t"+leader+"\n")
	}
	require.Contains(t, out.String(), "spread: moved KV_PHAROX_PROXIES_")
	require.Contains(t, out.String(), " n3->")
	require.Contains(t, out.String(), fmt.Sprintf("(%d step-downs in ", p.StepDowns))
	t.Logf("worker spread-leaders:\n%s", out.String())

	cfg, err = parseWith(newSpreadLeadersFlagSet, []string{"--shards", "3"}, envMap(nil))
	require.NoError(t, err)
	_, err = runSpreadLeaders(ctx, cfg, log, &out)
	require.ErrorContains(t, err, "needs --nats-url")
}
