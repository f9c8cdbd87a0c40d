package manager

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/replica"
)

// What metrics and readiness probes read of a manager. Each read costs the
// number of pools (or less), never the number of proxies.

// PoolGauges returns every pool's statistics and proxies by status, from
// the replica's incremental counts brought to now.
func (m *Manager) PoolGauges() []replica.PoolGauges {
	m.advance()
	return m.replica.Gauges(m.now())
}

// KnownPool reports whether the replica holds a pool of that name: metrics
// label requests with a pool name only when it names one, so that callers
// cannot grow the label set with made-up names.
func (m *Manager) KnownPool(name string) bool {
	_, ok := m.replica.Pool(name)
	return ok
}

// Waiters is the number of acquires parked waiting for a proxy to free up
// (wait_seconds).
func (m *Manager) Waiters() int {
	q := m.waiters
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, l := range q.byPool {
		n += l.Len()
	}
	return n
}

// CaughtUp waits, until ctx ends, for the replica to apply every pool and
// proxy write the buckets had acknowledged when it was called: the
// readiness probe's "replica caught up".
func (m *Manager) CaughtUp(ctx context.Context) error {
	if err := m.sync(ctx, kvstore.PoolsBucket); err != nil {
		return err
	}
	return m.syncProxies(ctx)
}

// ReplicaLag is how far the replica is behind the pools and proxies
// streams, the larger of the two: the time between the stream's last
// message and the newest message the replica has applied, or 0 when it has
// applied the last one.
func (m *Manager) ReplicaLag(ctx context.Context) (time.Duration, error) {
	var lag time.Duration
	for _, bucket := range append([]string{kvstore.PoolsBucket}, m.store.ProxyBuckets()...) {
		seq, last, err := m.store.LastWrite(ctx, bucket)
		if err != nil {
			return 0, err
		}
		if m.replica.Seen(bucket) >= seq {
			continue
		}
		applied := m.applied.at(bucket)
		if applied.IsZero() {
			// Nothing applied yet of a stream that has writes: behind by
			// at least the age of its last one.
			applied, last = last, m.now()
		}
		lag = max(lag, last.Sub(applied))
	}
	return lag, nil
}

// appliedTimes are the stream timestamps of the newest message the replica
// applied, per bucket (pools and each shard's proxies), as Unix
// nanoseconds.
type appliedTimes struct{ m sync.Map } // bucket -> *atomic.Int64

func (a *appliedTimes) slot(bucket string) *atomic.Int64 {
	if v, ok := a.m.Load(bucket); ok {
		return v.(*atomic.Int64)
	}
	v, _ := a.m.LoadOrStore(bucket, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func (a *appliedTimes) mark(bucket string, at time.Time) { a.slot(bucket).Store(at.UnixNano()) }

func (a *appliedTimes) at(bucket string) time.Time {
	ns := a.slot(bucket).Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// endWriteSpan ends a KV write's span with its revision or its error.
func endWriteSpan(span trace.Span, rev uint64, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(attribute.Int64("pharox.revision", int64(rev)))
	}
	span.End()
}
