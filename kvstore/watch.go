package kvstore

import (
	"context"
	"time"

	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// Sink receives what the watches of the pools and proxies buckets deliver,
// in each bucket's stream order, from one goroutine per bucket.
type Sink interface {
	// HasProxy reports whether the sink holds proxy id at rev or later
	// already (this worker's own write, installed when it committed), so
	// the watch need not decode it.
	HasProxy(id string, rev uint64) bool
	// ProxyChanged is a proxy's version at rev; nil when deleted.
	ProxyChanged(id string, rec *record.Proxy, rev uint64)
	// ProxyOwed is what the write of proxy id at rev owes (its outbox
	// entry, undecoded), told before the version itself, whether the
	// version is decoded or not.
	ProxyOwed(stream string, rev uint64, owed Owed)
	// PoolChanged is a pool's version at rev; nil when deleted.
	PoolChanged(name string, rec *record.Pool, rev uint64)
	// Seen says the bucket's stream has been delivered up to seq, whose
	// message the stream stored at at (its timestamp: replica lag).
	Seen(bucket string, seq uint64, at time.Time)
}

// LoadSizer is a Sink that sizes its tables for a bucket's initial load
// once, from the count the server gives with its first message, instead of
// growing them step by step (a million proxies spent 0.7 s of their load
// growing the replica's map).
type LoadSizer interface {
	ExpectProxies(n int)
}

// Watch feeds sink from the pools bucket and every shard's proxies bucket
// (one goroutine each) until stop is called,
// and returns once sink has everything the buckets held when it started.
// The proxies bucket is read with each write's headers: they carry what
// the write owes.
func (s *Store) Watch(ctx context.Context, sink Sink) (stop func(), err error) {
	stopPools, err := WatchBucket(ctx, s.nc, PoolsBucket, func(e Entry) { s.deliverPool(sink, e) })
	if err != nil {
		return nil, storeErr("watch "+PoolsBucket, err)
	}
	stops := []func(){stopPools}
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for i := range s.shards {
		sh := &s.shards[i]
		first := true
		stop, err := WatchBucket(ctx, s.nc, sh.bucket, func(e Entry) {
			if sizer, ok := sink.(LoadSizer); ok && first {
				sizer.ExpectProxies(int(min(e.Pending, 1<<30)) + 1)
			}
			first = false
			s.deliverProxy(sink, i, e)
		})
		if err != nil {
			stopAll()
			return nil, storeErr("watch "+sh.bucket, err)
		}
		stops = append(stops, stop)
	}
	return stopAll, nil
}

// deliverPool hands one version of a pool to the sink.
func (s *Store) deliverPool(sink Sink, e Entry) {
	var rec *record.Pool
	var err error
	if !e.Deleted {
		rec, err = record.DecodePool(e.Value)
	}
	if err != nil {
		s.log.Error("undecodable record skipped by the watch", zapBucket(PoolsBucket), zapKey(e.Key), zapErr(err))
	} else {
		sink.PoolChanged(e.Key, rec, e.Revision)
	}
	sink.Seen(PoolsBucket, e.Revision, e.Created)
}

// deliverProxy hands one message of the proxies stream to the sink: what
// it owes, then the version (from this worker's own write in hand when it
// is one, decoded otherwise), then the sequence.
func (s *Store) deliverProxy(sink Sink, i int, e Entry) {
	sh := &s.shards[i]
	if len(s.shards) > 1 {
		s.where.set(e.Key, i)
	}
	if entry := e.Header.Get(outbox.Header); entry != "" {
		sink.ProxyOwed(sh.stream, e.Revision, Owed{Worker: e.Header.Get(outbox.WorkerHeader), Entry: entry, At: e.Created})
	}
	// Only this worker's own writes can be in the sink already, which it
	// makes once it serves, after the initial load: there the lookup always
	// missed and cost a million-proxy load 0.6 s. (Were one there, the
	// sink's revision check would refuse it all the same.)
	if e.Initial || !sink.HasProxy(e.Key, e.Revision) {
		var rec *record.Proxy
		var err error
		if !e.Deleted {
			if rec = s.own.match(e.Key, e.Value); rec == nil {
				rec, err = s.codec.Decode(e.Value)
				if err == nil && rec.CredentialsUnreadable() {
					s.noteUnreadable(rec)
				}
			}
		}
		if err != nil {
			s.log.Error("undecodable record skipped by the watch", zapBucket(sh.bucket), zapKey(e.Key), zapErr(err))
		} else {
			sink.ProxyChanged(e.Key, rec, e.Revision)
		}
	}
	sink.Seen(sh.bucket, e.Revision, e.Created)
}
