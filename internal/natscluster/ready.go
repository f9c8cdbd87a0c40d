package natscluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// poll is how often the waits below look again.
const poll = 25 * time.Millisecond

// WaitReady waits until the running nodes agree on a JetStream meta
// leader, the cluster knows all its nodes, and the leader sees every
// running node current.
func (c *Cluster) WaitReady(ctx context.Context) error {
	var last error
	for {
		if last = c.metaReady(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: not ready: %w (%w)", last, ctx.Err())
		case <-time.After(poll):
		}
	}
}

func (c *Cluster) metaReady(ctx context.Context) error {
	leader := ""
	running := map[string]bool{}
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		running[n.spec.Name] = true
		jsz, err := n.jsz(ctx)
		if err != nil {
			return err
		}
		switch {
		case jsz.Meta == nil || jsz.Meta.Leader == "":
			return fmt.Errorf("node %s knows no meta leader", n.spec.Name)
		case jsz.Meta.Size != len(c.nodes):
			return fmt.Errorf("node %s sees a cluster of %d nodes", n.spec.Name, jsz.Meta.Size)
		case leader != "" && jsz.Meta.Leader != leader:
			return fmt.Errorf("nodes disagree on the meta leader (%s, %s)", leader, jsz.Meta.Leader)
		}
		leader = jsz.Meta.Leader
	}
	if leader == "" {
		return errors.New("no node runs")
	}
	ln := c.Node(leader)
	if ln == nil || !running[leader] {
		return fmt.Errorf("the meta leader %q is not a running node", leader)
	}
	jsz, err := ln.jsz(ctx)
	if err != nil {
		return err
	}
	current := 0
	for _, p := range jsz.Meta.Replicas {
		if running[p.Name] && p.Current && !p.Offline {
			current++
		}
	}
	if current != len(running)-1 {
		return fmt.Errorf("the meta leader sees %d of %d other running nodes current", current, len(running)-1)
	}
	return nil
}

// jsz reads the node's /jsz.
func (n *Node) jsz(ctx context.Context) (*server.JSInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, n.MonitorURL()+"/jsz", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.spec.Name, err)
	}
	defer resp.Body.Close()
	var out server.JSInfo
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("node %s: /jsz: %w", n.spec.Name, err)
	}
	return &out, nil
}

// StreamLeader returns the node that leads the stream now, waiting until
// the stream has a leader.
func (c *Cluster) StreamLeader(ctx context.Context, stream string) (*Node, error) {
	for {
		info, err := c.streamInfo(ctx, stream)
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			if n := c.Node(info.Cluster.Leader); n != nil {
				return n, nil
			}
			return nil, fmt.Errorf("natscluster: stream %s is led by %q, not one of this cluster's nodes", stream, info.Cluster.Leader)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natscluster: stream %s has no leader: %w (last error: %v)", stream, ctx.Err(), err)
		case <-time.After(poll):
		}
	}
}

// WaitStreamsCurrent waits until every stream of the cluster has a leader
// and every replica of it is current: after a restart, the restarted
// node has caught up.
func (c *Cluster) WaitStreamsCurrent(ctx context.Context) error {
	for {
		lagging, err := c.laggingStream(ctx)
		if err == nil && lagging == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: streams not current: %w (%s, %v)", ctx.Err(), lagging, err)
		case <-time.After(poll):
		}
	}
}

// laggingStream names a stream without a leader or with a replica that is
// not current, "" when there is none.
func (c *Cluster) laggingStream(ctx context.Context) (string, error) {
	nc, err := c.adminConn()
	if err != nil {
		return "", err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names := js.StreamNames(lctx)
	var all []string
	for name := range names.Name() {
		all = append(all, name)
	}
	if err := names.Err(); err != nil {
		return "", err
	}
	for _, name := range all {
		info, err := c.streamInfo(ctx, name)
		if err != nil {
			return name, err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return name + " has no leader", nil
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Sprintf("%s replica %s is not current", name, r.Name), nil
			}
		}
	}
	return "", nil
}

func (c *Cluster) streamInfo(ctx context.Context, stream string) (*jetstream.StreamInfo, error) {
	nc, err := c.adminConn()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ictx, stream)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// MoveStreamLeader makes node to the stream's leader (a leader stepdown
// that prefers it) and waits until it is.
func (c *Cluster) MoveStreamLeader(ctx context.Context, stream string, to *Node) error {
	nc, err := c.adminConn()
	if err != nil {
		return err
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to.spec.Name}})
	for {
		leader, err := c.StreamLeader(ctx, stream)
		if err != nil {
			return err
		}
		if leader == to {
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = nc.RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, req)
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: stream %s still led by %s, not %s: %w", stream, leader.spec.Name, to.spec.Name, ctx.Err())
		case <-time.After(poll):
		}
	}
}
