// Package client is the Go client of the pharox NATS service: the leasing
// calls of pharox's ProxyManager (Acquire, Release, WithLease, ...), the
// admin calls, and the lifecycle events, over the wire contract
// (docs/PROTOCOL.md). Requests and replies are the model package's types.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	c := client.New(nc)
//	err := c.WithLease(ctx, model.AcquireRequest{PoolName: "scrapers"},
//		func(ctx context.Context, lease model.Lease, proxy model.Proxy) error {
//			return scrape(ctx, proxy.URL)
//		})
//
// Every call takes a context; each request also waits at most the client's
// timeout (WithTimeout, default 10 s) for its reply. A refused request returns an
// *Error that errors.Is matches against the model sentinels.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/model"
)

// DefaultTimeout bounds each request unless WithTimeout says otherwise.
const DefaultTimeout = 10 * time.Second

// Client sends the contract's requests on one NATS connection. It is safe
// for concurrent use.
type Client struct {
	nc      *nats.Conn
	prefix  string
	timeout time.Duration
	tracer  trace.Tracer // WithTracerProvider (trace.go)
}

// Option configures New.
type Option func(*Client)

// WithPrefix sets the subject prefix the workers serve (default "pharox").
func WithPrefix(prefix string) Option { return func(c *Client) { c.prefix = prefix } }

// WithTimeout sets how long a request waits for its reply (default 10 s),
// or less when its context ends sooner. An acquire with wait_seconds waits
// that much longer.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// New returns a client on nc.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, prefix: "pharox", timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	if c.prefix == "" {
		c.prefix = "pharox"
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c
}

// Prefix returns the subject prefix.
func (c *Client) Prefix() string { return c.prefix }

// Timeout returns how long a request waits for its reply.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Subject returns the subject of an operation, e.g. "pharox.acquire".
func (c *Client) Subject(op string) string { return c.prefix + "." + op }

// call sends req to <prefix>.<op> and decodes the reply into out.
func (c *Client) call(ctx context.Context, op string, req, out any) error {
	return c.callWait(ctx, op, req, out, 0)
}

// callWait is call with extra time for a server-side wait.
func (c *Client) callWait(ctx context.Context, op string, req, out any, extra time.Duration) error {
	subject := c.Subject(op)
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("pharox request %s: encode: %w", subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+extra)
	defer cancel()
	request := &nats.Msg{Subject: subject, Data: data}
	ctx, endSpan := c.traceRequest(ctx, request)
	msg, err := c.nc.RequestMsgWithContext(ctx, request)
	if err != nil {
		endSpan(err)
		return transportError(subject, err)
	}
	err = replyError(msg)
	endSpan(err)
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Subject = subject
		}
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("pharox request %s: decode reply: %w", subject, err)
	}
	return nil
}

// callFor is call for the operations whose reply decodes into one value of
// type T, which it returns (with an error, as far as call filled it in).
func callFor[T any](ctx context.Context, c *Client, op string, req any) (T, error) {
	var out T
	err := c.call(ctx, op, req, &out)
	return out, err
}

// Acquire leases a proxy (pharox.acquire). It returns nil, nil, nil when no
// eligible proxy is free, like pharox's acquire_proxy returning None.
func (c *Client) Acquire(ctx context.Context, req model.AcquireRequest) (*model.Lease, *model.Proxy, error) {
	var extra time.Duration
	if req.WaitSeconds != nil && *req.WaitSeconds > 0 {
		extra = time.Duration(*req.WaitSeconds * float64(time.Second))
	}
	var reply model.AcquireReply
	if err := c.callWait(ctx, "acquire", req, &reply, extra); err != nil {
		return nil, nil, err
	}
	if reply.Lease == nil || reply.Proxy == nil {
		return nil, nil, nil
	}
	return reply.Lease, reply.Proxy, nil
}

// Release ends a lease (pharox.release). Releasing an ended lease is not an
// error: the lease comes back as it is. The request may report how the
// proxy did (v1.1): model.ReleaseSuccess(id), model.ReleaseFailure(id,
// reason).
func (c *Client) Release(ctx context.Context, req model.ReleaseRequest) (model.Lease, error) {
	return c.leaseCall(ctx, "release", req)
}

// Renew sets a lease's expires_at to now + duration_seconds (pharox.renew).
func (c *Client) Renew(ctx context.Context, req model.RenewRequest) (model.Lease, error) {
	return c.leaseCall(ctx, "renew", req)
}

// Lease reads a lease (pharox.leases.get).
func (c *Client) Lease(ctx context.Context, leaseID string) (model.Lease, error) {
	return c.leaseCall(ctx, "leases.get", model.LeaseGetRequest{LeaseID: leaseID})
}

func (c *Client) leaseCall(ctx context.Context, op string, req any) (model.Lease, error) {
	reply, err := callFor[model.LeaseReply](ctx, c, op, req)
	if err != nil {
		return model.Lease{}, err
	}
	if reply.Lease == nil {
		return model.Lease{}, fmt.Errorf("pharox request %s: reply has no lease", c.Subject(op))
	}
	return *reply.Lease, nil
}

// Stats returns a pool's statistics (pharox.stats).
func (c *Client) Stats(ctx context.Context, pool string) (model.PoolStatsSnapshot, error) {
	return callFor[model.PoolStatsSnapshot](ctx, c, "stats", model.StatsRequest{PoolName: pool})
}

// Cleanup marks every lease past its expiry as expired and returns how many
// this call expired (pharox.cleanup, pharox's cleanup_expired_leases).
func (c *Client) Cleanup(ctx context.Context) (int, error) {
	reply, err := callFor[model.CleanupReply](ctx, c, "cleanup", model.EmptyRequest{})
	return reply.Released, err
}

// CreatePool creates a pool (pharox.admin.pools.create); an existing name
// is ErrConflict.
func (c *Client) CreatePool(ctx context.Context, req model.PoolCreateRequest) (model.ProxyPool, error) {
	return callFor[model.ProxyPool](ctx, c, "admin.pools.create", req)
}

// ListPools lists every pool (pharox.admin.pools.list).
func (c *Client) ListPools(ctx context.Context) ([]model.ProxyPool, error) {
	reply, err := callFor[model.PoolsReply](ctx, c, "admin.pools.list", model.EmptyRequest{})
	return reply.Pools, err
}

// UpdatePool changes a pool's description or health check
// (pharox.admin.pools.update).
func (c *Client) UpdatePool(ctx context.Context, req model.PoolUpdateRequest) (model.ProxyPool, error) {
	return callFor[model.ProxyPool](ctx, c, "admin.pools.update", req)
}

// DeletePool deletes a pool and its proxies (pharox.admin.pools.delete);
// with active leases it is ErrConflict unless Force.
func (c *Client) DeletePool(ctx context.Context, req model.PoolDeleteRequest) error {
	return c.call(ctx, "admin.pools.delete", req, &model.DeletedReply{})
}

// AddProxies adds 1..1000 proxies to a pool, all or none
// (pharox.admin.proxies.add).
func (c *Client) AddProxies(ctx context.Context, req model.ProxiesAddRequest) ([]model.Proxy, error) {
	reply, err := callFor[model.ProxiesReply](ctx, c, "admin.proxies.add", req)
	return reply.Proxies, err
}

// ListProxies returns one page of a pool's proxies in added order
// (pharox.admin.proxies.list); pass NextCursor back as Cursor for the next.
func (c *Client) ListProxies(ctx context.Context, req model.ProxiesListRequest) (model.ProxiesPage, error) {
	return callFor[model.ProxiesPage](ctx, c, "admin.proxies.list", req)
}

// AllProxies iterates over every page of ListProxies. The iteration stops
// after yielding an error.
func (c *Client) AllProxies(ctx context.Context, req model.ProxiesListRequest) iter.Seq2[model.Proxy, error] {
	return func(yield func(model.Proxy, error) bool) {
		for {
			page, err := c.ListProxies(ctx, req)
			if err != nil {
				yield(model.Proxy{}, err)
				return
			}
			for _, p := range page.Proxies {
				if !yield(p, nil) {
					return
				}
			}
			if page.NextCursor == nil || *page.NextCursor == "" || len(page.Proxies) == 0 {
				return
			}
			req.Cursor = page.NextCursor
		}
	}
}

// GetProxy reads a proxy (pharox.admin.proxies.get).
func (c *Client) GetProxy(ctx context.Context, proxyID string) (model.Proxy, error) {
	return callFor[model.Proxy](ctx, c, "admin.proxies.get", model.ProxyGetRequest{ProxyID: proxyID})
}

// UpdateProxy changes the fields that are set (pharox.admin.proxies.update);
// model.Null clears a nullable field.
func (c *Client) UpdateProxy(ctx context.Context, req model.ProxyUpdateRequest) (model.Proxy, error) {
	return callFor[model.Proxy](ctx, c, "admin.proxies.update", req)
}

// DeleteProxy deletes a proxy (pharox.admin.proxies.delete); with active
// leases it is ErrConflict unless Force.
func (c *Client) DeleteProxy(ctx context.Context, req model.ProxyDeleteRequest) error {
	return c.call(ctx, "admin.proxies.delete", req, &model.DeletedReply{})
}

// EnsureConsumer registers a consumer if needed and returns it; the id is
// the same on every call (pharox.admin.consumers.ensure).
func (c *Client) EnsureConsumer(ctx context.Context, name string) (model.Consumer, error) {
	return callFor[model.Consumer](ctx, c, "admin.consumers.ensure", model.ConsumerEnsureRequest{Name: name})
}

// ListConsumers lists every consumer (pharox.admin.consumers.list).
func (c *Client) ListConsumers(ctx context.Context) ([]model.Consumer, error) {
	reply, err := callFor[model.ConsumersReply](ctx, c, "admin.consumers.list", model.EmptyRequest{})
	return reply.Consumers, err
}

// HealthCheck probes one proxy (ProxyID) or a pool's proxies (PoolName,
// Limit) with Options or the pool's, applies each result as ApplyHealth does
// and returns the results (pharox.admin.health.check). Workers that do not
// run health checks answer ErrUnavailable.
func (c *Client) HealthCheck(ctx context.Context, req model.HealthCheckRequest) ([]model.HealthCheckResult, error) {
	reply, err := callFor[model.HealthCheckReply](ctx, c, "admin.health.check", req)
	return reply.Results, err
}

// ApplyHealth records a health-check result on its proxy and returns the
// proxy (pharox.admin.health.apply, pharox's apply_health_check_result).
func (c *Client) ApplyHealth(ctx context.Context, req model.HealthApplyRequest) (model.Proxy, error) {
	return callFor[model.Proxy](ctx, c, "admin.health.apply", req)
}

// LastHealth returns the last health result recorded for a proxy, or nil
// if it was never checked (pharox.admin.health.last).
func (c *Client) LastHealth(ctx context.Context, proxyID string) (*model.HealthCheckResult, error) {
	reply, err := callFor[model.HealthLastReply](ctx, c, "admin.health.last", model.HealthLastRequest{ProxyID: proxyID})
	return reply.Result, err
}

// isTransient reports whether a failed call may succeed if simply retried.
func isTransient(err error) bool {
	return errors.Is(err, model.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionReconnecting)
}
