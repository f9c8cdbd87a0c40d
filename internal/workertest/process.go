package workertest

import (
	"bufio"
	"context"
	"encoding/json"
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
// process: it names the NATS server the worker joins; childConfig carries
// its ChildConfig as JSON.
const (
	childURL    = "PHAROX_TEST_WORKER_URL"
	childConfig = "PHAROX_TEST_WORKER_CONFIG"
)

// ChildConfig tunes a worker process; zero values take the defaults a
// child has (worker defaults, a 1 s expiry sweep, a 100 ms heartbeat that
// counts as dead after 600 ms).
type ChildConfig struct {
	MaxInflight    int           `json:"max_inflight,omitempty"`
	RequestTimeout time.Duration `json:"request_timeout,omitempty"`
	// StopTimeout bounds the worker's Stop on SIGTERM (default: the
	// request timeout + 5 s, as cmd/worker gives it).
	StopTimeout time.Duration `json:"stop_timeout,omitempty"`
	// Intake gives the worker a second connection for admin.proxies.add.
	Intake bool `json:"intake,omitempty"`
}

// RunChildIfAsked turns this test binary into a worker process when it was
// started as one by StartChild: it serves until SIGTERM (a clean stop) or
// SIGKILL, and never returns. Call it first in the package's TestMain.
func RunChildIfAsked() {
	url := os.Getenv(childURL)
	if url == "" {
		return
	}
	var cfg ChildConfig
	if err := json.Unmarshal([]byte(os.Getenv(childConfig)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child worker: config:", err)
		os.Exit(2)
	}
	os.Exit(runChild(url, cfg))
}

func runChild(url string, cfg ChildConfig) int {
	// SIGTERM may come as soon as the child says it is ready.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child worker: connect:", err)
		return 1
	}
	defer nc.Close()
	wcfg := Config{Log: zap.NewNop(), SweepInterval: time.Second, MaxInflight: cfg.MaxInflight,
		RequestTimeout: cfg.RequestTimeout, Heartbeat: 100 * time.Millisecond, DeadAfter: 600 * time.Millisecond}
	if cfg.Intake {
		if wcfg.IntakeConn, err = nats.Connect(url, nats.MaxReconnects(-1)); err != nil {
			fmt.Fprintln(os.Stderr, "child worker: connect intake:", err)
			return 1
		}
		defer wcfg.IntakeConn.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := New(ctx, nc, wcfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child worker: start:", err)
		return 1
	}
	fmt.Println("ready", w.Events.WorkerID())
	<-term
	stop := cfg.StopTimeout
	if stop <= 0 {
		stop = cfg.RequestTimeout
		if stop <= 0 {
			stop = 5 * time.Second
		}
		stop += 5 * time.Second
	}
	sctx, scancel := context.WithTimeout(context.Background(), stop)
	defer scancel()
	if err := w.Worker.Stop(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "child worker: stop:", err)
		return 3
	}
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
// serves. It is killed, if still running, when the test ends. At most one
// cfg tunes it.
func StartChild(t testing.TB, url string, cfg ...ChildConfig) *Child {
	t.Helper()
	var c ChildConfig
	if len(cfg) > 0 {
		c = cfg[0]
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childURL+"="+url, childConfig+"="+string(data))
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

// Terminate ends the child with SIGTERM and waits for it to stop: an
// error when its Stop did not finish cleanly (exit status 3) or it failed
// otherwise.
func (c *Child) Terminate() error {
	if err := c.Signal(); err != nil {
		return err
	}
	return c.Wait()
}

// Signal sends the child SIGTERM without waiting; Wait waits for it.
func (c *Child) Signal() error { return c.cmd.Process.Signal(syscall.SIGTERM) }

// Wait waits for the child to exit; see Terminate.
func (c *Child) Wait() error { return c.cmd.Wait() }
