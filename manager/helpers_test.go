package manager_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
)

// openManager opens a store and a manager on it, on a connection of its own
// to srv: a worker's manager without the rest of the worker. The caller
// closes it, when its test wants the replica's feed to stop.
func openManager(t testing.TB, ctx context.Context, srv *server.Server) *manager.Manager {
	t.Helper()
	store, err := kvstore.Open(ctx, natstest.Connect(t, srv))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	m, err := manager.New(ctx, store)
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	return m
}

// streamInfo reads the state of the named stream, failing the test when it
// cannot.
func streamInfo(t testing.TB, ctx context.Context, js jetstream.JetStream, name string, opts ...jetstream.StreamInfoOpt) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx, opts...)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info
}
