package kvstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	ProxyOwed(rev uint64, owed Owed)
	// PoolChanged is a pool's version at rev; nil when deleted.
	PoolChanged(name string, rec *record.Pool, rev uint64)
	// Seen says the bucket's stream has been delivered up to seq, whose
	// message the stream stored at at (its timestamp: replica lag).
	Seen(bucket string, seq uint64, at time.Time)
}

// Watch feeds sink from the pools and proxies buckets until stop is called,
// and returns once sink has everything the buckets held when it started.
// The proxies bucket is read through an ordered consumer of its stream, as
// a KV watch would, but with each write's headers: they carry what the
// write owes.
func (s *Store) Watch(ctx context.Context, sink Sink) (stop func(), err error) {
	wctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var proxySub *nats.Subscription
	stop = func() {
		cancel()
		if proxySub != nil {
			_ = proxySub.Unsubscribe()
		}
		wg.Wait()
	}
	ready := make(chan struct{}, 2)

	w, err := s.pools.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, storeErr("watch "+PoolsBucket, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.consumePools(w, sink, ready)
	}()

	proxySub, err = s.watchProxies(sink, ready)
	if err != nil {
		stop()
		return nil, storeErr("watch "+ProxiesBucket, err)
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

func (s *Store) consumePools(w jetstream.KeyWatcher, sink Sink, ready chan<- struct{}) {
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
		var rec *record.Pool
		var err error
		if e.Operation() == jetstream.KeyValuePut {
			rec, err = record.DecodePool(e.Value())
		}
		if err != nil {
			s.log.Error("undecodable record skipped by the watch", zapBucket(PoolsBucket), zapKey(e.Key()), zapErr(err))
		} else {
			sink.PoolChanged(e.Key(), rec, e.Revision())
		}
		sink.Seen(PoolsBucket, e.Revision(), e.Created())
	}
}

// watchProxies subscribes an ordered consumer to the proxies stream, from
// the last version of every key on; ready gets a value once the versions
// the stream held at the start are delivered.
func (s *Store) watchProxies(sink Sink, ready chan<- struct{}) (*nats.Subscription, error) {
	legacy, err := s.nc.JetStream()
	if err != nil {
		return nil, err
	}
	prefix := "$KV." + ProxiesBucket + "."
	var mu sync.Mutex // orders the callback's ready signal after the initial count is known
	var initPending uint64
	received, initDone := uint64(0), false
	signal := func() {
		initDone = true
		ready <- struct{}{}
	}
	mu.Lock()
	defer mu.Unlock()
	sub, err := legacy.Subscribe(prefix+">", func(m *nats.Msg) {
		meta, err := m.Metadata()
		if err != nil || len(m.Subject) <= len(prefix) {
			return
		}
		s.deliverProxy(sink, m.Subject[len(prefix):], meta.Sequence.Stream, meta.Timestamp, m)
		mu.Lock()
		defer mu.Unlock()
		if !initDone {
			received++
			if received >= initPending || meta.NumPending == 0 {
				signal()
			}
		}
	}, nats.BindStream("KV_"+ProxiesBucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject())
	if err != nil {
		return nil, err
	}
	pending, err := sub.InitialConsumerPending()
	if err != nil && !errors.Is(err, nats.ErrTypeSubscription) {
		_ = sub.Unsubscribe()
		return nil, err
	}
	initPending = pending
	if pending == 0 || received >= pending {
		if !initDone {
			signal()
		}
	}
	return sub, nil
}

// deliverProxy hands one message of the proxies stream to the sink: what
// it owes, then the version (from this worker's own write in hand when it
// is one, decoded otherwise), then the sequence.
func (s *Store) deliverProxy(sink Sink, id string, rev uint64, at time.Time, m *nats.Msg) {
	deleted := false
	if op := m.Header.Get(kvOperation); op != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		deleted = true
	}
	if entry := m.Header.Get(outbox.Header); entry != "" {
		sink.ProxyOwed(rev, Owed{Worker: m.Header.Get(outbox.WorkerHeader), Entry: entry, At: at})
	}
	if !sink.HasProxy(id, rev) {
		var rec *record.Proxy
		var err error
		if !deleted {
			if rec = s.own.match(id, m.Data); rec == nil {
				rec, err = s.codec.Decode(m.Data)
				if err == nil && rec.CredentialsUnreadable() {
					s.noteUnreadable(rec)
				}
			}
		}
		if err != nil {
			s.log.Error("undecodable record skipped by the watch", zapBucket(ProxiesBucket), zapKey(id), zapErr(err))
		} else {
			sink.ProxyChanged(id, rec, rev)
		}
	}
	sink.Seen(ProxiesBucket, rev, at)
}
