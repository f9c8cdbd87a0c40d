package natscluster

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunNodeIfAsked turns this binary into a cluster node when it was started
// as one (Config.Processes): it serves until SIGTERM (a graceful shutdown),
// SIGKILL, or its parent going away (stdin closes), and never returns.
// Call it first in TestMain, or in main, of every binary whose clusters run
// in child processes.
func RunNodeIfAsked() {
	raw := os.Getenv(nodeEnv)
	if raw == "" {
		return
	}
	os.Exit(runNode(raw))
}

func runNode(raw string) int {
	var spec nodeSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "natscluster node:", err)
		return 2
	}
	s, err := server.NewServer(spec.options())
	if err != nil {
		fmt.Fprintf(os.Stderr, "natscluster node %s: %v\n", spec.Name, err)
		return 1
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		fmt.Fprintf(os.Stderr, "natscluster node %s: not ready for connections in 30s\n", spec.Name)
		return 1
	}
	orphaned := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(orphaned)
	}()
	fmt.Println("ready")
	select {
	case <-term:
	case <-orphaned:
	}
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}
