package kvstore

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/record"
)

// Sink receives what the watches of the pools and proxies buckets deliver,
// in each bucket's stream order.
type Sink interface {
	// HasProxy reports whether the sink holds proxy id at rev or later
	// already (this worker's own write, installed when it committed), so
	// the watch need not decode it.
	HasProxy(id string, rev uint64) bool
	// ProxyChanged is a proxy's version at rev; nil when deleted.
	ProxyChanged(id string, rec *record.Proxy, rev uint64)
	// PoolChanged is a pool's version at rev; nil when deleted.
	PoolChanged(name string, rec *record.Pool, rev uint64)
	// Seen says the bucket's stream has been delivered up to seq.
	Seen(bucket string, seq uint64)
}

// Watch feeds sink from the pools and proxies buckets until stop is called,
// and returns once sink has everything the buckets held when it started.
func (s *Store) Watch(ctx context.Context, sink Sink) (stop func(), err error) {
	wctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	ready := make(chan struct{}, 2)
	for _, kv := range []jetstream.KeyValue{s.pools, s.proxies} {
		w, err := kv.WatchAll(wctx)
		if err != nil {
			stop()
			return nil, storeErr("watch "+kv.Bucket(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.consume(kv.Bucket(), w, sink, ready)
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-ready:
		case <-ctx.Done():
			stop()
			return nil, storeErr("initial watch", ctx.Err())
		}
	}
	return stop, nil
}

func (s *Store) consume(bucket string, w jetstream.KeyWatcher, sink Sink, ready chan<- struct{}) {
	defer func() { _ = w.Stop() }()
	initial := true
	for e := range w.Updates() {
		if e == nil {
			if initial {
				initial = false
				ready <- struct{}{}
			}
			continue
		}
		deleted := e.Operation() != jetstream.KeyValuePut
		var err error
		switch bucket {
		case ProxiesBucket:
			if sink.HasProxy(e.Key(), e.Revision()) {
				break
			}
			var rec *record.Proxy
			if !deleted {
				if rec = s.own.match(e.Key(), e.Value()); rec == nil {
					rec, err = record.DecodeProxy(e.Value())
				}
			}
			if err == nil {
				sink.ProxyChanged(e.Key(), rec, e.Revision())
			}
		case PoolsBucket:
			var rec *record.Pool
			if !deleted {
				rec, err = record.DecodePool(e.Value())
			}
			if err == nil {
				sink.PoolChanged(e.Key(), rec, e.Revision())
			}
		}
		if err != nil {
			s.log.Error("undecodable record skipped by the watch", zapBucket(bucket), zapKey(e.Key()), zapErr(err))
		}
		sink.Seen(bucket, e.Revision())
	}
}
