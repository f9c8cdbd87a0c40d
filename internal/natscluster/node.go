package natscluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// nodeSpec is everything a node is started from, the same at every
// restart: its name, store and ports.
type nodeSpec struct {
	Name    string   `json:"name"`
	Cluster string   `json:"cluster"`
	Dir     string   `json:"dir"`
	Client  int      `json:"client"`
	Route   int      `json:"route"`
	Monitor int      `json:"monitor"`
	Routes  []string `json:"routes"`
}

// options are the server options of a node. They are built afresh at each
// start: a server keeps state in the Options it was given.
func (s nodeSpec) options() *server.Options {
	return &server.Options{
		ServerName: s.Name,
		Host:       "127.0.0.1", Port: s.Client,
		HTTPHost: "127.0.0.1", HTTPPort: s.Monitor,
		NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: s.Dir,
		MaxPayload: 8 << 20,
		Cluster:    server.ClusterOpts{Name: s.Cluster, Host: "127.0.0.1", Port: s.Route},
		Routes:     server.RoutesFromStr(strings.Join(s.Routes, ",")),
	}
}

// Node is one node of a cluster.
type Node struct {
	spec    nodeSpec
	process bool

	mu     sync.Mutex
	srv    *server.Server // in process, while it runs
	child  *exec.Cmd      // in a child process, while it runs
	stdin  io.Closer      // the child exits when this closes (also when this process dies)
	exited chan struct{}  // closed when the child has exited
}

// Name is the node's server name (n1, n2, ...), the name stream info gives
// for its leader.
func (n *Node) Name() string { return n.spec.Name }

// ClientURL is the node's client URL; it stays the same across restarts.
func (n *Node) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.spec.Client) }

// MonitorURL is the node's HTTP monitoring address (/jsz, /varz, ...).
func (n *Node) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.spec.Monitor) }

// Running reports whether the node runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil || n.child != nil
}

// PID is the node's process id: this process's when it runs in process, 0
// when it does not run.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.child != nil:
		return n.child.Process.Pid
	case n.srv != nil:
		return os.Getpid()
	}
	return 0
}

// Server is the node's server when it runs in this process, else nil.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

func (n *Node) start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil || n.child != nil {
		return fmt.Errorf("natscluster: node %s runs already", n.spec.Name)
	}
	if n.process {
		return n.startChild(ctx)
	}
	s, err := server.NewServer(n.spec.options())
	if err != nil {
		return fmt.Errorf("natscluster: node %s: %w", n.spec.Name, err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout(ctx)) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("natscluster: node %s not ready for connections", n.spec.Name)
	}
	n.srv = s
	return nil
}

// readyTimeout is how long a node may take to listen: until ctx's
// deadline, at most 30 s.
func readyTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return min(time.Until(dl), 30*time.Second)
	}
	return 30 * time.Second
}

// nodeEnv carries a child node's spec (JSON) to RunNodeIfAsked.
const nodeEnv = "PHAROX_NATSCLUSTER_NODE"

func (n *Node) startChild(ctx context.Context) error {
	spec, _ := json.Marshal(n.spec)
	// -test.run=^$: a test binary whose TestMain forgot RunNodeIfAsked runs
	// no test (and starts no cluster of its own) instead of serving.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natscluster: start node %s: %w", n.spec.Name, err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case line := <-lines:
		if line != "ready" {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("natscluster: node %s did not start (said %q; does TestMain call RunNodeIfAsked?)", n.spec.Name, line)
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("natscluster: node %s: %w", n.spec.Name, ctx.Err())
	}
	n.child, n.stdin, n.exited = cmd, stdin, exited
	return nil
}

// Stop shuts the node down gracefully (its leaderships are handed over
// first) and waits until it has. Stopping a stopped node does nothing.
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.srv != nil:
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	case n.child != nil:
		_ = n.child.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(30 * time.Second):
			_ = n.child.Process.Kill()
			<-n.exited
		}
		n.clearChild()
	}
	return nil
}

// Kill ends a child-process node with SIGKILL: nothing of it runs after,
// nothing was handed over. In-process nodes cannot be killed.
func (n *Node) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.process {
		return errors.New("natscluster: only a node in a child process can be killed (Config.Processes)")
	}
	if n.child == nil {
		return nil
	}
	if err := n.child.Process.Kill(); err != nil {
		return err
	}
	<-n.exited
	n.clearChild()
	return nil
}

func (n *Node) clearChild() {
	_ = n.stdin.Close()
	n.child, n.stdin, n.exited = nil, nil, nil
}

// Restart starts a stopped or killed node again on the same store and
// ports. It returns once the node takes connections; Cluster.WaitReady and
// Cluster.WaitStreamsCurrent wait for it to have caught up.
func (n *Node) Restart(ctx context.Context) error { return n.start(ctx) }
