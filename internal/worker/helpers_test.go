package worker_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/natstest"
)

// runServer runs an embedded NATS server for the test alone and returns it
// and a connection to it.
func runServer(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	srv := natstest.RunServer(t)
	return srv, natstest.Connect(t, srv)
}
