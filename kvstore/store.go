// Package kvstore keeps all pharox state in JetStream KV buckets and does
// every read and write of it. Writes that change what a proxy can be leased
// for are revision-checked (compare-and-swap), so any number of workers on any
// number of machines share the state without a lock held in one process.
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// Bucket names. They do not move with the subject prefix: one NATS account
// holds one pharox deployment's state.
const (
	PoolsBucket     = "PHAROX_POOLS"
	ProxiesBucket   = "PHAROX_PROXIES"
	LeasesBucket    = "PHAROX_LEASES"
	ConsumersBucket = "PHAROX_CONSUMERS"
)

// Store is the JetStream KV implementation of pharox's storage.
type Store struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	pools     jetstream.KeyValue
	proxies   jetstream.KeyValue
	leases    jetstream.KeyValue
	consumers jetstream.KeyValue
	requests  jetstream.KeyValue
	replica   *replica
	opts      options
	log       *zap.Logger

	locks     *keyLocks
	inflight  *inflight
	onExpired func([]model.Lease)

	consumerMu    sync.RWMutex
	consumerCache map[string]model.Consumer

	cancelWatch context.CancelFunc
	watchDone   chan struct{}
}

type options struct {
	replicas      int
	now           func() time.Time
	log           *zap.Logger
	leaseHistory  time.Duration
	maxCASRetries int
	grace         time.Duration
}

// Option configures Open.
type Option func(*options)

// WithReplicas sets the replica count of buckets this store creates.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithClock replaces time.Now, for tests of expiry.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithExpiryGrace makes a lease count as expired only grace after its
// expires_at, so that workers whose clocks run a little ahead never free a
// slot before its holder's own clock says the lease ended.
func WithExpiryGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// WithLeaseHistory sets how long ended lease records stay readable.
func WithLeaseHistory(d time.Duration) Option { return func(o *options) { o.leaseHistory = d } }

// validate refuses option values that cannot work, naming the option.
func (o options) validate() error {
	var errs []error
	if o.replicas < 1 || o.replicas > 5 {
		errs = append(errs, fmt.Errorf("WithReplicas must be 1..5, got %d", o.replicas))
	}
	if o.grace < 0 {
		errs = append(errs, fmt.Errorf("WithExpiryGrace must not be negative, got %s", o.grace))
	}
	if o.leaseHistory <= 0 {
		errs = append(errs, fmt.Errorf("WithLeaseHistory must be positive, got %s", o.leaseHistory))
	}
	if o.now == nil {
		errs = append(errs, errors.New("WithClock must not be nil"))
	}
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kvstore: %w", err)
	}
	return nil
}

// Open connects the store to the buckets, creating missing ones, and starts
// the local replica of pools and proxies. It returns once the replica holds
// everything the buckets held when it started.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	o := options{replicas: 1, now: time.Now, log: zap.NewNop(), leaseHistory: 48 * time.Hour, maxCASRetries: 64}
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
	s := &Store{nc: nc, js: js, opts: o, log: o.log, consumerCache: map[string]model.Consumer{}, locks: newKeyLocks(), inflight: newInflight()}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.pools, jetstream.KeyValueConfig{Bucket: PoolsBucket, Description: "pharox pools", History: 1}},
		{&s.proxies, jetstream.KeyValueConfig{Bucket: ProxiesBucket, Description: "pharox proxies and their active leases", History: 1}},
		// A lease record is written once, when its lease ends, so a
		// bucket-wide max age bounds history without per-key TTLs.
		{&s.leases, jetstream.KeyValueConfig{Bucket: LeasesBucket, Description: "pharox ended leases", History: 1, TTL: o.leaseHistory}},
		{&s.consumers, jetstream.KeyValueConfig{Bucket: ConsumersBucket, Description: "pharox consumers", History: 1}},
		{&s.requests, jetstream.KeyValueConfig{Bucket: RequestsBucket, Description: "pharox acquire idempotency keys", History: 1, TTL: o.leaseHistory}},
	}
	for _, b := range buckets {
		b.cfg.Storage = jetstream.FileStorage
		b.cfg.Replicas = o.replicas
		kv, err := EnsureBucket(ctx, js, b.cfg)
		if err != nil {
			return nil, err
		}
		*b.kv = kv
	}
	s.replica = newReplica()
	if err := s.startWatch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the replica's watchers.
func (s *Store) Close() {
	s.cancelWatch()
	<-s.watchDone
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.opts.now().UTC() }

// Horizon is the time against which leases are judged: a lease whose
// expires_at is not after it has expired. It is Now less the expiry grace.
func (s *Store) Horizon() time.Time { return s.Now().Add(-s.opts.grace) }

// EnsureBucket looks a bucket up and creates it when missing. Several workers
// starting at once race here: a create that loses finds the winner's bucket
// on the next attempt. Each attempt has its own timeout because a create that
// overlaps another's can go unanswered.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(actx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(actx, cfg)
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		sleepJitter(ctx, time.Duration(attempt+1)*50*time.Millisecond)
	}
	return nil, fmt.Errorf("%w: bucket %s: %w", model.ErrUnavailable, cfg.Bucket, lastErr)
}

// sleepJitter waits between d/2 and d, or until ctx ends.
func sleepJitter(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// storeErr turns a JetStream failure into the sentinel the broker maps to 503
// when it is a matter of reaching the store in time.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return fmt.Errorf("%w: %s: %w", model.ErrUnavailable, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// backoff grows from 1 ms to 32 ms; sleepJitter spreads it so that writers
// that collided do not collide again in step.
func backoff(attempt int) time.Duration {
	return time.Millisecond << min(attempt, 5)
}
