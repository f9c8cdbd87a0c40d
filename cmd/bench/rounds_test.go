package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	require.Equal(t, 0.7, median([]float64{0.9, 0.55, 0.7}))
	require.Equal(t, 0.75, median([]float64{0.9, 0.6, 0.8, 0.7}))
	require.Equal(t, 2.0, median([]float64{2}))
}

func TestRoundsFlag(t *testing.T) {
	cfg, err := parseFlags(nil)
	require.NoError(t, err)
	require.Equal(t, 3, cfg.rounds, "scenario 1's targets are medians of 3 rounds by default")
	_, err = parseFlags([]string{"--rounds", "0"})
	require.ErrorContains(t, err, "--rounds must be at least 1")
}
