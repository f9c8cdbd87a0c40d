package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealthFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	cfg, err := parseConfig(nil, env(nil))
	require.NoError(t, err)
	require.Equal(t, 32, cfg.HealthConcurrency)
	require.True(t, cfg.HealthSweeps)

	cfg, err = parseConfig(nil, env(map[string]string{"PHAROX_HEALTH_CONCURRENCY": "8", "PHAROX_HEALTH_SWEEPS": "false"}))
	require.NoError(t, err)
	require.Equal(t, 8, cfg.HealthConcurrency)
	require.False(t, cfg.HealthSweeps)

	// A flag wins over its variable.
	cfg, err = parseConfig([]string{"--health-concurrency", "4", "--health-sweeps=true"},
		env(map[string]string{"PHAROX_HEALTH_CONCURRENCY": "8", "PHAROX_HEALTH_SWEEPS": "false"}))
	require.NoError(t, err)
	require.Equal(t, 4, cfg.HealthConcurrency)
	require.True(t, cfg.HealthSweeps)

	_, err = parseConfig([]string{"--health-concurrency", "0"}, env(nil))
	require.ErrorContains(t, err, "--health-concurrency must be 1..4096")
	_, err = parseConfig(nil, env(map[string]string{"PHAROX_HEALTH_SWEEPS": "maybe"}))
	require.ErrorContains(t, err, "PHAROX_HEALTH_SWEEPS")
}
