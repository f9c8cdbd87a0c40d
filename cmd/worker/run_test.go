package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pharox/pharox-nats/model"
)

// TestRun runs the worker as main does: embedded server (on a random port),
// connection, internal/worker with the example seed file, until its context
// ends; then it shuts down cleanly.
func TestRun(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--seed", "../../examples/seed.json"},
		func(string) string { return "" })
	require.NoError(t, err)

	r := startObservedRun(t, cfg)
	require.Equal(t, true, r.serving["embedded_server"])
	url, _ := r.serving["nats_url"].(string)
	require.True(t, strings.HasPrefix(url, "nats://127.0.0.1:"), url)

	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	msg, err := nc.Request("pharox.stats", []byte(`{"pool_name":"latam"}`), 10*time.Second)
	require.NoError(t, err)
	var st model.PoolStatsSnapshot
	require.NoError(t, json.Unmarshal(msg.Data, &st), string(msg.Data))
	require.Equal(t, 4, st.TotalProxies, "the seed file's pool is there")

	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	require.NotEmpty(t, r.logs.FilterMessage("worker stopped").All())
	require.Empty(t, r.logs.FilterMessage("shutdown incomplete").All())
}

// observedRun is the worker's run function running in a test, its log
// lines kept.
type observedRun struct {
	logs    *observer.ObservedLogs
	serving map[string]any     // the fields of its "pharox worker serving" line
	cancel  context.CancelFunc // ends run's context
	done    chan error         // run's result, once it returned
}

// startObservedRun runs the worker's run function with cfg, as main does,
// logging at info level into an observer, and waits until it serves: the
// start of the tests that look at a running worker and then at how it
// stops (the context ends with the test at the latest).
func startObservedRun(t *testing.T, cfg config) *observedRun {
	t.Helper()
	serving := make(chan string, 1)
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "pharox worker serving" {
			serving <- e.Message
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log) }()

	select {
	case <-serving:
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not serving after 30s")
	}
	fields := logs.FilterMessage("pharox worker serving").All()[0].ContextMap()
	return &observedRun{logs: logs, serving: fields, cancel: cancel, done: done}
}

// TestRunRefusesWhatCannotWork: a worker whose start fails (a --listen that
// is no address, a seed file that is not there) returns the error, after
// shutting down what it had started, instead of serving.
func TestRunRefusesWhatCannotWork(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:notaport", "--data-dir", t.TempDir()}, func(string) string { return "" })
	require.NoError(t, err)
	require.ErrorContains(t, run(context.Background(), cfg, zap.NewNop()), `--listen "127.0.0.1:notaport"`)

	cfg, err = parseConfig([]string{"--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--seed", "no-such-seed.json"}, func(string) string { return "" })
	require.NoError(t, err)
	require.ErrorContains(t, run(context.Background(), cfg, zap.NewNop()), "read seed file")
}
