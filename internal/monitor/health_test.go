package monitor_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// TestHealthChecksAreCounted: each probe the worker runs is counted by the
// status it found.
func TestHealthChecksAreCounted(t *testing.T) {
	nc, _, base := startMonitored(t, worker.Config{})
	ctx := t.Context()

	// A proxy nobody listens on: its probes fail at once.
	port := natstest.FreePort(t)
	c := client.New(nc, client.WithTimeout(timeout))
	poolWithProxy(t, c, "h", port)
	pool := "h"
	results, err := c.HealthCheck(ctx, model.HealthCheckRequest{PoolName: &pool,
		Options: &model.HealthCheckOptions{TargetURL: "http://127.0.0.1:1/", Timeout: 2, Attempts: 1}})
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.Equal(t, model.ProxyInactive, results[0].Status)

	got, ok := value(scrape(t, base), "pharox_health_checks_total", map[string]string{"result": "inactive"})
	require.True(t, ok)
	require.Equal(t, 1.0, got)
}
