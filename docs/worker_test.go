package docs_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
)

// testWorker is a real worker on an embedded NATS server, with a client
// connection to that server.
type testWorker struct {
	*workertest.Worker
	nc *nats.Conn
}

// startWorker starts an embedded NATS server and a worker with the default
// prefix, stopped when the test ends.
func startWorker(t *testing.T) testWorker {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	return testWorker{Worker: workertest.Start(t, nc, workertest.Config{}), nc: nc}
}
