package kvstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Sharding. A deployment spreads its pools over S shards: shard i has its
// own proxies bucket (one stream, so one raft leader on a cluster) and its
// own lease-history bucket; a pool lives in the shard its name hashes to
// (FNV-1a), with all its proxies and their ended leases. The other buckets
// (pools, consumers, requests, outbox) and the events stream are shared.
// With S = 1 the bucket names are the ones pharox has always used.
const (
	// MaxShards bounds --shards.
	MaxShards = 64
	// ShardsMetaKey is the key, in the metadata of the pools bucket's
	// stream, that records the deployment's shard count. It is written
	// when the pools bucket is created; a pools bucket without it (created
	// before sharding) means 1.
	ShardsMetaKey = "pharox_shards"
)

// PoolsStream is the stream behind the pools bucket, whose metadata
// records the shard count.
const PoolsStream = "KV_" + PoolsBucket

// ErrShardsMismatch: the worker was started with a shard count other than
// the one the deployment's buckets were created with.
var ErrShardsMismatch = errors.New("shard count differs from the deployment's")

// ShardOf is the shard of pool name among shards: FNV-1a (32 bits) of the
// name, modulo shards. It never changes for a given name and count.
func ShardOf(pool string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(pool))
	return int(h.Sum32() % uint32(shards))
}

// ProxiesBucketName is the proxies bucket of shard i among shards:
// PHAROX_PROXIES when there is one shard, PHAROX_PROXIES_<i> otherwise.
func ProxiesBucketName(i, shards int) string { return shardName(ProxiesBucket, i, shards) }

// LeasesBucketName is the lease-history bucket of shard i among shards.
func LeasesBucketName(i, shards int) string { return shardName(LeasesBucket, i, shards) }

// ProxiesStreamName is the stream behind ProxiesBucketName(i, shards).
func ProxiesStreamName(i, shards int) string { return "KV_" + ProxiesBucketName(i, shards) }

func shardName(base string, i, shards int) string {
	if shards <= 1 {
		return base
	}
	return base + "_" + strconv.Itoa(i)
}

// shard is one shard's buckets.
type shard struct {
	proxies jetstream.KeyValue
	leases  jetstream.KeyValue
	bucket  string // the proxies bucket's name
	stream  string // its stream
}

// Shards is the store's shard count.
func (s *Store) Shards() int { return len(s.shards) }

// ProxyBuckets are the proxies buckets, shard by shard.
func (s *Store) ProxyBuckets() []string {
	out := make([]string, len(s.shards))
	for i, sh := range s.shards {
		out[i] = sh.bucket
	}
	return out
}

// ProxyStreams are the streams behind the proxies buckets, shard by shard.
func (s *Store) ProxyStreams() []string {
	out := make([]string, len(s.shards))
	for i, sh := range s.shards {
		out[i] = sh.stream
	}
	return out
}

// ProxiesBucketOf is the proxies bucket that holds pool's proxies.
func (s *Store) ProxiesBucketOf(pool string) string { return s.shardOfPool(pool).bucket }

// ProxiesStreamOf is the stream behind ProxiesBucketOf(pool).
func (s *Store) ProxiesStreamOf(pool string) string { return s.shardOfPool(pool).stream }

func (s *Store) shardOfPool(pool string) *shard { return &s.shards[ShardOf(pool, len(s.shards))] }

// proxyShards remembers which shard each proxy id lives in (only with
// more than one shard), as the watches deliver them and as this worker
// writes them; a proxy id not known yet is looked for in every shard.
type proxyShards struct{ m sync.Map } // id -> int

func (p *proxyShards) set(id string, i int) { p.m.Store(id, i) }

func (p *proxyShards) get(id string) (int, bool) {
	v, ok := p.m.Load(id)
	if !ok {
		return 0, false
	}
	return v.(int), true
}

// ensureShards creates the pools bucket with the shard count in its
// stream's metadata, or checks the count recorded in an existing one.
func ensureShards(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, shards int) (jetstream.KeyValue, error) {
	cfg.Metadata = map[string]string{ShardsMetaKey: strconv.Itoa(shards)}
	kv, err := EnsureBucket(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	recorded, err := RecordedShards(ctx, js)
	if err != nil {
		return nil, err
	}
	if recorded != shards {
		return nil, fmt.Errorf("kvstore: %w: the buckets of this deployment were created with --shards %d (recorded in stream %s, metadata key %s) and this worker was started with --shards %d: start it with --shards %d (PHAROX_SHARDS=%d), or change the deployment's shard count offline (README, Running on a cluster: stop the workers, export the pools and proxies, delete the PHAROX_* buckets, start with the new --shards, import)",
			ErrShardsMismatch, recorded, PoolsStream, ShardsMetaKey, shards, recorded, recorded)
	}
	return kv, nil
}

// RecordedShards reads the shard count recorded in the pools bucket's
// stream; 1 when it records none (a bucket created before sharding).
func RecordedShards(ctx context.Context, js jetstream.JetStream) (int, error) {
	st, err := js.Stream(ctx, PoolsStream)
	if err != nil {
		return 0, storeErr("stream info "+PoolsStream, err)
	}
	v, ok := st.CachedInfo().Config.Metadata[ShardsMetaKey]
	if !ok {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("kvstore: stream %s records %s=%q, not a shard count", PoolsStream, ShardsMetaKey, v)
	}
	return n, nil
}
