package manager_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

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
