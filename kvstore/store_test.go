package kvstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

func open(t *testing.T) (*kvstore.Store, jetstream.KeyValue, context.Context) {
	t.Helper()
	srv := natstest.RunServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := kvstore.Open(ctx, natstest.Connect(t, srv))
	require.NoError(t, err)
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	require.NoError(t, err)
	return s, kv, ctx
}

func newProxies(n int) []*record.Proxy {
	pool := &record.Pool{ID: uuid.NewString(), Name: "p"}
	out := make([]*record.Proxy, n)
	for i := range out {
		out[i] = record.NewProxy(pool, uint64(i+1), model.ProxyInput{Host: "10.0.0.1", Port: 1000 + i})
	}
	return out
}

// A proxy write is checked against the revision it was based on: a stale
// base loses and writes nothing, a deleted proxy is not found, and the
// revision returned is the KV revision of the write.
func TestUpdateProxyIsRevisionChecked(t *testing.T) {
	s, kv, ctx := open(t)
	recs := newProxies(1)
	last, err := s.CreateProxies(ctx, recs)
	require.NoError(t, err)
	rec, base, err := s.GetProxy(ctx, recs[0].ID)
	require.NoError(t, err)
	require.Equal(t, last, base)

	next := rec.Clone()
	next.Port = 2000
	rev, err := s.UpdateProxy(ctx, next, base, kvstore.Owed{})
	require.NoError(t, err)
	entry, err := kv.Get(ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, entry.Revision(), rev)

	stale := rec.Clone()
	stale.Port = 3000
	_, err = s.UpdateProxy(ctx, stale, base, kvstore.Owed{})
	require.ErrorIs(t, err, kvstore.ErrRevisionConflict)
	got, gotRev, err := s.GetProxy(ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, rev, gotRev)
	require.Equal(t, 2000, got.Port, "the stale write changed nothing")

	_, err = s.DeleteProxy(ctx, rec.ID, base, kvstore.Owed{})
	require.ErrorIs(t, err, kvstore.ErrRevisionConflict)
	delRev, err := s.DeleteProxy(ctx, rec.ID, rev, kvstore.Owed{})
	require.NoError(t, err)
	require.Greater(t, delRev, rev)
	_, _, err = s.GetProxy(ctx, rec.ID)
	require.ErrorIs(t, err, model.ErrProxyNotFound)
	_, err = s.UpdateProxy(ctx, next, rev, kvstore.Owed{})
	require.Error(t, err)
}

// Adding proxies is all or none: one create that fails removes the others.
func TestCreateProxiesAllOrNone(t *testing.T) {
	s, _, ctx := open(t)
	taken := newProxies(1)
	_, err := s.CreateProxies(ctx, taken)
	require.NoError(t, err)
	batch := append(newProxies(5), taken[0].Clone())
	_, err = s.CreateProxies(ctx, batch)
	require.Error(t, err)
	for _, rec := range batch[:5] {
		_, _, err := s.GetProxy(ctx, rec.ID)
		require.ErrorIs(t, err, model.ErrProxyNotFound, "proxy %s left behind", rec.ID)
	}
	_, _, err = s.GetProxy(ctx, taken[0].ID)
	require.NoError(t, err, "the proxy that was there stays")
}

// sink records what the watch delivers.
type sink struct {
	mu      sync.Mutex
	proxies map[string]*record.Proxy
	revs    map[string]uint64
	pools   map[string]*record.Pool
	seen    map[string]uint64
	owed    map[uint64]kvstore.Owed
	seenCh  chan struct{}
}

func newSink() *sink {
	return &sink{proxies: map[string]*record.Proxy{}, revs: map[string]uint64{}, pools: map[string]*record.Pool{},
		seen: map[string]uint64{}, owed: map[uint64]kvstore.Owed{}, seenCh: make(chan struct{}, 1024)}
}

func (k *sink) HasProxy(id string, rev uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.revs[id] >= rev
}

func (k *sink) ProxyChanged(id string, rec *record.Proxy, rev uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.proxies[id], k.revs[id] = rec, rev
}

func (k *sink) ProxyOwed(_ string, rev uint64, owed kvstore.Owed) {
	k.mu.Lock()
	defer k.mu.Unlock()
	owed.At = time.Time{} // set by the watch: when the stream stored it
	k.owed[rev] = owed
}

func (k *sink) PoolChanged(name string, rec *record.Pool, rev uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pools[name] = rec
}

func (k *sink) Seen(bucket string, seq uint64, _ time.Time) {
	k.mu.Lock()
	k.seen[bucket] = seq
	k.mu.Unlock()
	k.seenCh <- struct{}{}
}

// waitSeen waits until the sink has been delivered the bucket up to seq.
func (k *sink) waitSeen(t *testing.T, ctx context.Context, bucket string, seq uint64) {
	t.Helper()
	for {
		k.mu.Lock()
		done := k.seen[bucket] >= seq
		k.mu.Unlock()
		if done {
			return
		}
		select {
		case <-k.seenCh:
		case <-ctx.Done():
			t.Fatalf("watch of %s did not reach %d", bucket, seq)
		}
	}
}

// The watch delivers what the buckets held at start before Watch returns,
// then every change in order, deletes as nil, and the bucket's sequence.
func TestWatchFeedsTheSink(t *testing.T) {
	s, _, ctx := open(t)
	before := newProxies(3)
	_, err := s.CreateProxies(ctx, before)
	require.NoError(t, err)
	poolRev, err := s.CreatePool(ctx, &record.Pool{ID: uuid.NewString(), Name: "p", NextSeq: 1})
	require.NoError(t, err)

	k := newSink()
	stop, err := s.Watch(ctx, k)
	require.NoError(t, err)
	defer stop()
	k.mu.Lock()
	require.Len(t, k.proxies, 3, "initial values delivered before Watch returns")
	require.NotNil(t, k.pools["p"])
	k.mu.Unlock()

	rec, base, err := s.GetProxy(ctx, before[0].ID)
	require.NoError(t, err)
	next := rec.Clone()
	next.Host = "10.9.9.9"
	owed := kvstore.Owed{Worker: "w1", Entry: `{"w":"w1","e":[]}`}
	rev, err := s.UpdateProxy(ctx, next, base, owed)
	require.NoError(t, err)
	_, delBase, err := s.GetProxy(ctx, before[1].ID)
	require.NoError(t, err)
	delOwed := kvstore.Owed{Worker: "w2", Entry: `{"w":"w2","e":[]}`}
	_, err = s.DeleteProxy(ctx, before[1].ID, delBase, delOwed)
	require.NoError(t, err)
	seq, err := s.Sequence(ctx, kvstore.ProxiesBucket)
	require.NoError(t, err)
	require.Greater(t, seq, rev)
	k.waitSeen(t, ctx, kvstore.ProxiesBucket, seq)
	k.mu.Lock()
	require.Equal(t, "10.9.9.9", k.proxies[before[0].ID].Host)
	require.Equal(t, rev, k.revs[before[0].ID])
	require.Nil(t, k.proxies[before[1].ID], "a delete arrives as nil")
	require.Equal(t, owed, k.owed[rev], "what a write owes travels in its headers")
	require.Equal(t, delOwed, k.owed[k.revs[before[1].ID]], "and a delete's")
	require.Len(t, k.owed, 2, "writes that owe nothing carry nothing")
	k.mu.Unlock()

	pseq, err := s.Sequence(ctx, kvstore.PoolsBucket)
	require.NoError(t, err)
	require.Equal(t, poolRev, pseq)
}

// An ended lease's record reads back as written; an unknown one is not found.
func TestEndingRecords(t *testing.T) {
	s, _, ctx := open(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	l := model.Lease{ID: uuid.NewString(), ProxyID: uuid.NewString(), PoolID: uuid.NewString(), PoolName: "p",
		ConsumerID: uuid.NewString(), ConsumerName: "c", Status: model.LeaseReleased,
		AcquiredAt: now, ExpiresAt: now.Add(time.Minute), ReleasedAt: &now, FencingToken: 7}
	s.PutEnding(ctx, l)
	got, err := s.GetEnding(ctx, l.ID)
	require.NoError(t, err)
	require.Equal(t, l, got)
	_, err = s.GetEnding(ctx, uuid.NewString())
	require.ErrorIs(t, err, model.ErrLeaseNotFound)
}
