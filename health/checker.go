package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
)

// Checker probes proxies for one worker: on demand (admin.health.check,
// through CheckHealth) and in the pools' sweeps (Sweep). Both share one
// bound on the probes in flight, and both record results the same way.
type Checker struct {
	m        *manager.Manager
	prober   *Prober
	claims   *claims
	counters *counters
	opts     options
	log      *zap.Logger
	id       string
	sem      chan struct{}

	base   context.Context // ends with Close: on-demand checks stop
	cancel context.CancelFunc

	warnMu         sync.Mutex
	warnAt         time.Time
	warnSuppressed int
}

type options struct {
	concurrency   int
	replicas      int
	log           *zap.Logger
	tls           *tls.Config
	hook          func(ProbeInfo)
	tick          time.Duration
	refresh       time.Duration
	counterMaxAge time.Duration
	writeTimeout  time.Duration
}

// Option configures New.
type Option func(*options)

// WithConcurrency bounds the probes this worker runs at once, sweeps and
// admin.health.check together (default 32).
func WithConcurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// WithReplicas sets the replicas of the buckets when this worker creates them.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithTLSConfig sets how https targets are verified (default: the system's
// roots).
func WithTLSConfig(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithProbeHook calls fn after every probe this worker completes, before
// its result is recorded (a probe cut short by shutdown is not reported):
// instrumentation and tests.
func WithProbeHook(fn func(ProbeInfo)) Option { return func(o *options) { o.hook = fn } }

// WithSchedule sets how often the sweep scheduler looks for proxies due
// (tick, default 100 ms) and re-reads pools and proxies (refresh, default
// 1 s).
func WithSchedule(tick, refresh time.Duration) Option {
	return func(o *options) { o.tick, o.refresh = tick, refresh }
}

// validate refuses Checker option values that cannot work, naming the
// option.
func (o options) validate() error {
	var errs []error
	if o.concurrency < 1 {
		errs = append(errs, fmt.Errorf("WithConcurrency must be at least 1, got %d", o.concurrency))
	}
	if o.replicas < 1 || o.replicas > 5 {
		errs = append(errs, fmt.Errorf("WithReplicas must be 1..5, got %d", o.replicas))
	}
	if o.tick <= 0 || o.refresh <= 0 {
		errs = append(errs, fmt.Errorf("WithSchedule needs a positive tick and refresh, got %s and %s", o.tick, o.refresh))
	}
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}

// ProbeInfo describes one probe a worker made.
type ProbeInfo struct {
	Worker  string // the Checker's ID
	ProxyID string
	// Slot is the sweep interval slot the probe was claimed for, or -1 for
	// admin.health.check; SlotStart is when that slot began (zero for
	// admin.health.check).
	Slot      int64
	SlotStart time.Time
	Result    model.HealthCheckResult
}

// New creates the health buckets when missing and returns a checker that
// records results through m.
func New(ctx context.Context, nc *nats.Conn, m *manager.Manager, opts ...Option) (*Checker, error) {
	o := options{concurrency: 32, replicas: 1, log: zap.NewNop(), tick: 100 * time.Millisecond,
		refresh: time.Second, counterMaxAge: 7 * 24 * time.Hour, writeTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	claimsKV, err := kvstore.EnsureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      ClaimsBucket,
		Description: "pharox health sweeps: which worker probes a proxy in an interval slot",
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    o.replicas,
		// Per-key TTLs need limit markers; nobody reads the markers.
		LimitMarkerTTL: time.Second,
	})
	if err != nil {
		return nil, err
	}
	countersKV, err := kvstore.EnsureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      CountersBucket,
		Description: "pharox health: consecutive failed checks of failing proxies",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.replicas,
		// A counter not touched for this long is forgotten (a proxy deleted
		// while failing, or a pool whose checks were turned off).
		TTL: o.counterMaxAge,
	})
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	return &Checker{
		m: m, prober: NewProber(o.tls), claims: &claims{kv: claimsKV}, counters: &counters{kv: countersKV},
		opts: o, log: o.log, id: uuid.NewString(), sem: make(chan struct{}, o.concurrency),
		base: base, cancel: cancel,
	}, nil
}

// ID identifies this checker in claims and probe hooks.
func (c *Checker) ID() string { return c.id }

// Close stops on-demand checks in flight (Sweep stops with its context).
func (c *Checker) Close() { c.cancel() }

// Failures returns a proxy's consecutive failed checks as counted now.
func (c *Checker) Failures(ctx context.Context, proxyID string) (int, error) {
	return c.counters.failures(ctx, proxyID)
}

// CheckHealth serves pharox.admin.health.check: it probes one proxy, or
// every proxy of a pool (bounded by limit), with the request's options or
// else the pool's, records each result as a sweep does and replies with the
// results as probed (the status each probe measured; the proxies' statuses
// follow the policy, see Decide).
//
// The probes are not bound by the request's deadline but by their own
// timeout × attempts (and the worker's probe slots), so the reply comes when
// the slowest probe is done.
func (c *Checker) CheckHealth(ctx context.Context, req model.HealthCheckRequest) (model.HealthCheckReply, error) {
	reply := model.HealthCheckReply{Results: []model.HealthCheckResult{}}
	switch {
	case req.ProxyID != nil && req.PoolName != nil:
		return reply, model.Errorf(model.ErrBadRequest, "give either proxy_id or pool_name, not both")
	case req.ProxyID == nil && req.PoolName == nil:
		return reply, model.Errorf(model.ErrBadRequest, "proxy_id or pool_name is required")
	case req.Limit != nil && req.PoolName == nil:
		return reply, model.Errorf(model.ErrBadRequest, "limit goes with pool_name")
	}
	var targets []model.Proxy
	var pool *model.ProxyPool
	if req.ProxyID != nil {
		px, err := c.proxy(ctx, *req.ProxyID)
		if err != nil {
			return reply, err
		}
		targets = []model.Proxy{px}
		pool, err = c.pool(ctx, px.PoolName)
		if err != nil && !errors.Is(err, model.ErrPoolNotFound) {
			return reply, err
		}
	} else {
		var err error
		pool, targets, err = c.poolProxies(ctx, *req.PoolName, req.Limit)
		if err != nil {
			return reply, err
		}
	}
	var hc *model.HealthCheck
	if pool != nil {
		hc = pool.HealthCheck
	}
	opts, err := Resolve(hc, req.Options)
	if err != nil {
		return reply, err
	}
	threshold := 1
	if hc != nil {
		threshold = hc.FailureThreshold
	}

	run, cancel := context.WithTimeout(c.base, 15*time.Minute)
	defer cancel()
	results := make([]model.HealthCheckResult, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, px := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case c.sem <- struct{}{}:
			case <-run.Done():
				errs[i] = model.Errorf(model.ErrUnavailable, "health check stopped: %w", run.Err())
				return
			}
			res := c.prober.Probe(run, px, opts)
			<-c.sem
			if run.Err() != nil {
				errs[i] = model.Errorf(model.ErrUnavailable, "health check stopped: %w", run.Err())
				return
			}
			c.callHook(ProbeInfo{Worker: c.id, ProxyID: px.ID, Slot: -1, Result: res})
			results[i] = res
			_, errs[i] = c.record(run, px, res, threshold)
		}()
	}
	wg.Wait()
	var failed []error
	for i := range targets {
		switch {
		case errs[i] == nil:
			reply.Results = append(reply.Results, results[i])
		case errors.Is(errs[i], model.ErrProxyNotFound) && req.PoolName != nil:
			// Deleted while it was probed: nothing to report on.
		default:
			failed = append(failed, errs[i])
		}
	}
	if len(failed) > 0 {
		if len(targets) == 1 {
			return model.HealthCheckReply{}, failed[0]
		}
		return model.HealthCheckReply{}, fmt.Errorf("%d of %d results could not be recorded (the others were): %w",
			len(failed), len(targets), errors.Join(failed...))
	}
	return reply, nil
}

// record counts the result in the proxy's failure counter and applies it
// through the manager's revision-checked health write, the status decided
// by the policy inside that write. It returns the result as applied.
func (c *Checker) record(ctx context.Context, px model.Proxy, res model.HealthCheckResult, threshold int) (model.HealthCheckResult, error) {
	wctx, cancel := context.WithTimeout(ctx, c.opts.writeTimeout)
	defer cancel()
	failures, err := c.counters.record(wctx, px.ID, res.Status == model.ProxyInactive, res.CheckedAt)
	if err != nil {
		return res, unavailable(err)
	}
	_, applied, err := c.m.ApplyHealthDecision(wctx, res, func(current model.ProxyStatus) model.ProxyStatus {
		return Decide(current, res.Status, failures, threshold)
	})
	return applied, err
}

func (c *Checker) proxy(ctx context.Context, id string) (model.Proxy, error) {
	if id == "" {
		return model.Proxy{}, model.Errorf(model.ErrBadRequest, "proxy_id must not be empty")
	}
	if !model.ValidID(id) {
		// Any non-empty id is well-formed here: one that is no UUID names
		// no proxy.
		return model.Proxy{}, model.Errorf(model.ErrProxyNotFound, "proxy %q does not exist", id)
	}
	return c.m.GetProxy(ctx, id)
}

func (c *Checker) pool(ctx context.Context, name string) (*model.ProxyPool, error) {
	pools, err := c.m.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	for i := range pools {
		if pools[i].Name == name {
			return &pools[i], nil
		}
	}
	return nil, model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", name)
}

// poolProxies returns a pool and its proxies, refusing a pool with more
// proxies than limit.
func (c *Checker) poolProxies(ctx context.Context, name string, limitp *int) (*model.ProxyPool, []model.Proxy, error) {
	if err := model.CheckName("pool_name", name); err != nil {
		return nil, nil, err
	}
	limit := DefaultCheckLimit
	if limitp != nil {
		if *limitp < 1 || *limitp > MaxCheckLimit {
			return nil, nil, model.Errorf(model.ErrBadRequest, "limit must be in 1..%d, got %d", MaxCheckLimit, *limitp)
		}
		limit = *limitp
	}
	pool, err := c.pool(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	tooMany := func(n string) error {
		return model.Errorf(model.ErrBadRequest, "pool %q has %s proxies, more than limit %d: one admin.health.check probes at most %d "+
			"(raise limit up to %d, check proxies one by one with proxy_id, or turn on the pool's health_check sweeps)",
			name, n, limit, limit, MaxCheckLimit)
	}
	if st, err := c.m.PoolStats(ctx, name); err == nil && st.TotalProxies > limit {
		return nil, nil, tooMany(fmt.Sprint(st.TotalProxies))
	}
	var out []model.Proxy
	var cursor *string
	for {
		page, err := c.m.ListProxies(ctx, model.ProxiesListRequest{PoolName: name, Limit: ptr(model.MaxListLimit), Cursor: cursor})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, page.Proxies...)
		if len(out) > limit {
			return nil, nil, tooMany(fmt.Sprintf("more than %d", limit))
		}
		if page.NextCursor == nil {
			return pool, out, nil
		}
		cursor = page.NextCursor
	}
}

func (c *Checker) callHook(info ProbeInfo) {
	if c.opts.hook != nil {
		c.opts.hook(info)
	}
}

func unavailable(err error) error {
	if errors.Is(err, model.ErrUnavailable) {
		return err
	}
	return model.Errorf(model.ErrUnavailable, "%w", err)
}

func ptr[T any](v T) *T { return &v }
