package worker_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/natstest"
)

// serverConn runs an embedded NATS server for the test alone and returns a
// connection to it: for the tests that need no other connection and never
// the server itself.
func serverConn(t testing.TB) *nats.Conn {
	t.Helper()
	return natstest.Connect(t, natstest.RunServer(t))
}
