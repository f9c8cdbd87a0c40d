package workertest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// childURL is set in the environment of a test binary started as a worker
// process: it names the NATS server the worker joins.
const childURL = "PHAROX_TEST_WORKER_URL"

// RunChildIfAsked turns this test binary into a worker process when it was
// started as one by StartChild: it serves until SIGTERM (a clean stop) or
// SIGKILL, and never returns. Call it first in the package's TestMain.
func RunChildIfAsked() {
	url := os.Getenv(childURL)
	if url == "" {
		return
	}
	os.Exit(runChild(url))
}

func runChild(url string) int {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child worker: connect:", err)
		return 1
	}
	defer nc.Close()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := New(ctx, nc, Config{Log: zap.NewNop(), SweepInterval: time.Second,
		Heartbeat: 100 * time.Millisecond, DeadAfter: 600 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child worker: start:", err)
		return 1
	}
	fmt.Println("ready", w.Events.WorkerID())
	<-term
	w.Stop()
	return 0
}

// Child is a worker running in a process of its own, to be killed.
type Child struct {
	cmd *exec.Cmd
	// ID is the child's outbox worker id.
	ID string
}

// StartChild starts this test binary as a worker process joined to url
// (the package's TestMain must call RunChildIfAsked) and waits until it
// serves. It is killed, if still running, when the test ends.
func StartChild(t testing.TB, url string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childURL+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child worker did not start: %v", err)
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if !ok {
		t.Fatalf("child worker said %q", line)
	}
	return &Child{cmd: cmd, ID: id}
}

// Kill ends the child with SIGKILL: nothing of it runs after.
func (c *Child) Kill() error {
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = c.cmd.Wait()
	return nil
}

// Terminate ends the child with SIGTERM and waits for it to stop cleanly.
func (c *Child) Terminate() error {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return c.cmd.Wait()
}
