package manager_test

import (
	"os"
	"testing"

	"github.com/pharox/pharox-nats/internal/natstest"
)

func TestMain(m *testing.M) {
	natstest.RunNodeIfAsked() // the failover test's cluster nodes run as child processes
	os.Exit(m.Run())
}
