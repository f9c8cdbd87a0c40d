package manager

import (
	"context"
	"time"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/record"
)

// feed takes what the buckets' watches deliver into the replica, and tells
// waiting acquires of every proxy version installed.
type feed struct{ m *Manager }

var (
	_ kvstore.Sink      = feed{}
	_ kvstore.LoadSizer = feed{}
)

func (f feed) ExpectProxies(n int) { f.m.replica.Reserve(n) }

func (f feed) HasProxy(id string, rev uint64) bool { return f.m.replica.Has(id, rev) }

func (f feed) ProxyChanged(id string, rec *record.Proxy, rev uint64) {
	if f.m.replica.InstallProxy(id, rec, rev) && rec != nil {
		f.m.offer(rec)
	}
}

func (f feed) ProxyOwed(stream string, rev uint64, owed kvstore.Owed) {
	if o := f.m.opts.outbox; o != nil && owed.Worker != o.WorkerID() {
		o.Owed(stream, rev, owed)
	}
}

func (f feed) PoolChanged(name string, rec *record.Pool, rev uint64) {
	f.m.replica.InstallPool(name, rec, rev)
}

func (f feed) Seen(bucket string, seq uint64, at time.Time) {
	f.m.replica.MarkSeen(bucket, seq)
	f.m.applied.mark(bucket, at)
}

// installOwn installs a version of a proxy this worker's write committed and
// tells waiting acquires, as the watch would.
func (m *Manager) installOwn(rec *record.Proxy, rev uint64) {
	if m.replica.InstallOwnProxy(rec.ID, rec, rev) {
		m.offer(rec)
	}
}

// advance moves the replica's counts to the horizon: leases that ran out
// free their slots there with no write, so the proxies they held are
// offered to waiting acquires as an installed version would be.
func (m *Manager) advance() {
	for _, rec := range m.replica.Advance(m.horizon()) {
		m.offer(rec)
	}
}

// sync waits until the replica has applied every write the bucket
// acknowledged before the call, so that what is read from it (and "none
// free") reflects them, whichever worker made them.
func (m *Manager) sync(ctx context.Context, bucket string) error {
	seq, err := m.store.Sequence(ctx, bucket)
	if err != nil {
		return err
	}
	if err := m.replica.WaitSeen(ctx, bucket, seq); err != nil {
		return unavailable("sync replica", err)
	}
	return nil
}

// syncPool brings the replica up to every pool and proxy write acknowledged
// before the call and checks that the pool exists.
func (m *Manager) syncPool(ctx context.Context, pool string) error {
	if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
		return err
	}
	if _, ok := m.replica.Pool(pool); !ok {
		return kvstore.PoolNotFound(pool)
	}
	return m.sync(ctx, m.store.ProxiesBucketOf(pool))
}

// syncProxies is sync for every shard's proxies bucket.
func (m *Manager) syncProxies(ctx context.Context) error {
	for _, b := range m.store.ProxyBuckets() {
		if err := m.sync(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// now is the store's clock; horizon is the time against which leases are
// judged: a lease whose expires_at is not after it has expired.
func (m *Manager) now() time.Time     { return m.store.Now() }
func (m *Manager) horizon() time.Time { return m.now().Add(-m.opts.grace) }
