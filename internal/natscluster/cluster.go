// Package natscluster runs a NATS cluster with JetStream on loopback: N
// nodes with their own stores, either in this process or each in a child
// process of this binary (which then has to call RunNodeIfAsked first
// thing, in TestMain or main). A node can be stopped (in process: a
// graceful shutdown, its stream leaderships handed over in ~250 ms), killed
// (child process: SIGKILL, nothing handed over, a stream it led stays
// leaderless until a follower's election timer fires, 4-9 s) and restarted
// on the same store and ports. Tests use it through internal/natstest;
// cmd/bench through --cluster.
package natscluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Config says what cluster to run.
type Config struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Dir holds the nodes' stores, one directory per node (required).
	Dir string
	// Processes runs each node in a child process of this binary, so that
	// it can be killed with SIGKILL and its CPU measured on its own.
	Processes bool
	// Name is the cluster's name (default "pharox").
	Name string
}

// Cluster is a running cluster.
type Cluster struct {
	cfg   Config
	nodes []*Node

	connOnce sync.Once
	conn     *nats.Conn
	connErr  error
}

// Start starts every node and waits until the cluster has a JetStream meta
// leader that sees every node current. On an error nothing is left
// running.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Name == "" {
		cfg.Name = "pharox"
	}
	switch {
	case cfg.Nodes < 1:
		return nil, fmt.Errorf("natscluster: Nodes must be positive, got %d", cfg.Nodes)
	case cfg.Dir == "":
		return nil, errors.New("natscluster: Dir is required")
	}
	ports, err := freePorts(3 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	var routes []string
	for i := 0; i < cfg.Nodes; i++ {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
	}
	for i := 0; i < cfg.Nodes; i++ {
		c.nodes = append(c.nodes, &Node{spec: nodeSpec{
			Name:    fmt.Sprintf("n%d", i+1),
			Cluster: cfg.Name,
			Dir:     fmt.Sprintf("%s/n%d", cfg.Dir, i+1),
			Client:  ports[3*i],
			Route:   ports[3*i+1],
			Monitor: ports[3*i+2],
			Routes:  routes,
		}, process: cfg.Processes})
	}
	for _, n := range c.nodes {
		if err := n.start(ctx); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// Nodes returns the nodes, in the order of their names (n1, n2, ...).
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.spec.Name == name {
			return n
		}
	}
	return nil
}

// URLs is every node's client URL, comma-separated, as nats.Connect takes
// them: a client connected to a node that goes away reconnects to another.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Shutdown stops every node that runs (gracefully) and closes the
// cluster's own connection.
func (c *Cluster) Shutdown() {
	if c.conn != nil {
		c.conn.Close()
	}
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.Stop()
		}()
	}
	wg.Wait()
}

// adminConn is the cluster's own client connection, for stream info.
func (c *Cluster) adminConn() (*nats.Conn, error) {
	c.connOnce.Do(func() {
		c.conn, c.connErr = nats.Connect(c.URLs(), nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond), nats.Timeout(5*time.Second), nats.Name("natscluster"))
	})
	return c.conn, c.connErr
}

// freePorts reserves n loopback TCP ports: all are listened on at once, so
// they differ, then released for the nodes to take.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natscluster: reserve a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
