// Package kvstore keeps all pharox state in JetStream KV buckets: it creates
// the buckets, reads from their stream leaders, watches them, and makes the
// writes. Writes that change what a proxy can be leased for are
// revision-checked (compare-and-swap) against the revision the caller based
// its change on, so any number of workers on any number of machines share
// the state without a lock held in one process. What to write is decided by
// the manager; this package only stores it.
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// Bucket names. They do not move with the subject prefix: one NATS account
// holds one pharox deployment's state.
const (
	PoolsBucket   = "PHAROX_POOLS"
	ProxiesBucket = "PHAROX_PROXIES"
	// ProxiesStream is the stream behind the proxies bucket, whose
	// sequences are the proxies' revisions.
	ProxiesStream   = "KV_" + ProxiesBucket
	LeasesBucket    = "PHAROX_LEASES"
	ConsumersBucket = "PHAROX_CONSUMERS"
)

// Store is the JetStream KV implementation of pharox's storage.
type Store struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	pools     jetstream.KeyValue
	shards    []shard
	byName    map[string]jetstream.KeyValue // the pools and proxies buckets, by name
	where     proxyShards
	consumers jetstream.KeyValue
	requests  jetstream.KeyValue
	opts      options
	log       *zap.Logger

	own   *ownWrites
	codec *record.Codec
	// unreadable counts proxy versions the watch delivered whose
	// credentials this worker could not decrypt; warned rate-limits the
	// warning about them.
	unreadable atomic.Uint64
	warned     atomic.Int64

	consumerMu    sync.RWMutex
	consumerCache map[string]model.Consumer
}

type options struct {
	replicas      int
	shards        int
	now           func() time.Time
	log           *zap.Logger
	leaseHistory  time.Duration
	maxCASRetries int
	keys          *credkey.Ring
}

// Option configures Open.
type Option func(*options)

// WithReplicas sets the replica count of buckets this store creates.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithShards sets the number of shards the pools are spread over (see
// ShardOf). It must be the count the deployment's buckets were created
// with: Open refuses another one with ErrShardsMismatch.
func WithShards(n int) Option { return func(o *options) { o.shards = n } }

// WithClock replaces time.Now, for tests of expiry.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithLeaseHistory sets how long ended lease records stay readable.
func WithLeaseHistory(d time.Duration) Option { return func(o *options) { o.leaseHistory = d } }

// WithCredentialsKeys seals proxy credentials in the proxies bucket with
// ring's first key and opens them with any of its keys (see record.Codec).
// Without it credentials are written in clear, and sealed ones cannot be
// read.
func WithCredentialsKeys(ring *credkey.Ring) Option { return func(o *options) { o.keys = ring } }

// validate refuses option values that cannot work, naming the option.
func (o options) validate() error {
	var errs []error
	if o.replicas < 1 || o.replicas > 5 {
		errs = append(errs, fmt.Errorf("WithReplicas must be 1..5, got %d", o.replicas))
	}
	if o.shards < 1 || o.shards > MaxShards {
		errs = append(errs, fmt.Errorf("WithShards must be 1..%d, got %d", MaxShards, o.shards))
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

// Open connects the store to the buckets, creating missing ones.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	o := options{replicas: 1, shards: 1, now: time.Now, log: zap.NewNop(), leaseHistory: 48 * time.Hour, maxCASRetries: 64}
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
	s := &Store{nc: nc, js: js, opts: o, log: o.log, consumerCache: map[string]model.Consumer{}, own: newOwnWrites(),
		codec: record.NewCodec(o.keys)}
	// The pools bucket first: it records the shard count, checked before
	// any shard's bucket is made.
	if s.pools, err = ensureShards(ctx, js, jetstream.KeyValueConfig{Bucket: PoolsBucket, Description: "pharox pools",
		History: 1, Storage: jetstream.FileStorage, Replicas: o.replicas}, o.shards); err != nil {
		return nil, err
	}
	s.byName = map[string]jetstream.KeyValue{PoolsBucket: s.pools}
	s.shards = make([]shard, o.shards)
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.consumers, jetstream.KeyValueConfig{Bucket: ConsumersBucket, Description: "pharox consumers", History: 1}},
		{&s.requests, jetstream.KeyValueConfig{Bucket: RequestsBucket, Description: "pharox acquire idempotency keys", History: 1, TTL: o.leaseHistory}},
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.bucket, sh.stream = ProxiesBucketName(i, o.shards), ProxiesStreamName(i, o.shards)
		buckets = append(buckets, []struct {
			kv  *jetstream.KeyValue
			cfg jetstream.KeyValueConfig
		}{
			{&sh.proxies, jetstream.KeyValueConfig{Bucket: sh.bucket, Description: "pharox proxies and their active leases", History: 1}},
			// A lease record is written once, when its lease ends, so a
			// bucket-wide max age bounds history without per-key TTLs.
			{&sh.leases, jetstream.KeyValueConfig{Bucket: LeasesBucketName(i, o.shards), Description: "pharox ended leases", History: 1, TTL: o.leaseHistory}},
		}...)
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
	for _, sh := range s.shards {
		s.byName[sh.bucket] = sh.proxies
	}
	return s, nil
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.opts.now().UTC() }

// LeaseHistory is how long an ended lease record stays readable after its
// write (WithLeaseHistory).
func (s *Store) LeaseHistory() time.Duration { return s.opts.leaseHistory }

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
		retry.Sleep(ctx, time.Duration(attempt+1)*50*time.Millisecond)
	}
	return nil, model.Errorf(model.ErrUnavailable, "bucket %s: %w", cfg.Bucket, lastErr)
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
		errors.Is(err, nats.ErrConnectionDraining) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, errNoLeader) {
		return model.Errorf(model.ErrUnavailable, "%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
