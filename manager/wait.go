package manager

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// Parker lets a caller that bounds concurrent work (the broker's in-flight
// slots) take back a waiting acquire's slot while it sleeps. Park gives the
// slot up; Unpark takes one again before the acquire retries.
type Parker interface {
	Park()
	Unpark(ctx context.Context) error
}

type parkerKey struct{}

// ContextWithParker attaches p to ctx for AcquireProxy's waits.
func ContextWithParker(ctx context.Context, p Parker) context.Context {
	return context.WithValue(ctx, parkerKey{}, p)
}

func parkerFrom(ctx context.Context) Parker {
	p, _ := ctx.Value(parkerKey{}).(Parker)
	return p
}

// waitQueue holds the acquires waiting for a proxy to free up, per pool, in
// arrival order. They sleep on a channel until the replica installs a proxy
// version that could serve them: no polling, no CPU while idle.
type waitQueue struct {
	mu     sync.Mutex
	byPool map[string]*list.List
}

type waiter struct {
	p    acquireParams
	wake chan struct{}
}

func newWaitQueue() *waitQueue { return &waitQueue{byPool: map[string]*list.List{}} }

func (q *waitQueue) add(p acquireParams) (*waiter, func()) {
	w := &waiter{p: p, wake: make(chan struct{}, 1)}
	q.mu.Lock()
	l := q.byPool[p.pool]
	if l == nil {
		l = list.New()
		q.byPool[p.pool] = l
	}
	el := l.PushBack(w)
	q.mu.Unlock()
	return w, func() {
		q.mu.Lock()
		l.Remove(el)
		if l.Len() == 0 && q.byPool[p.pool] == l {
			delete(q.byPool, p.pool)
		}
		q.mu.Unlock()
	}
}

// proxyChanged wakes, first come first served, as many waiters whose filters
// the proxy matches as it has free slots.
func (m *Manager) proxyChanged(rec *kvstore.ProxyRecord) {
	if rec.Status != model.ProxyActive {
		return
	}
	q := m.waiters
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.byPool[rec.PoolName]
	if l == nil {
		return
	}
	free := -1 // unlimited
	if rec.MaxConcurrency != nil {
		free = *rec.MaxConcurrency - rec.LiveHolders(m.store.Horizon())
		if free <= 0 {
			return
		}
	}
	attrs := rec.Attrs()
	for el := l.Front(); el != nil && free != 0; el = el.Next() {
		w := el.Value.(*waiter)
		if !w.p.filters.Matches(attrs) {
			continue
		}
		select {
		case w.wake <- struct{}{}:
			free--
		default: // already woken, not yet retried
		}
	}
}

// rewake offers every proxy of the pool to its waiters again.
func (m *Manager) rewake(pool string) {
	var recs []*kvstore.ProxyRecord
	m.store.Candidates(pool, func(rec *kvstore.ProxyRecord) bool {
		recs = append(recs, rec)
		return true
	})
	for _, rec := range recs {
		m.proxyChanged(rec)
	}
}

// wait sleeps until a proxy that could serve p frees up, then tries again,
// until p.wait has passed since started. While asleep it holds no in-flight
// slot of the caller's (see Parker) and costs no CPU.
func (m *Manager) wait(ctx context.Context, p acquireParams, consumer model.Consumer, started time.Time) (*kvstore.Grant, int, error) {
	w, remove := m.waiters.add(p)
	defer func() {
		remove()
		// A wake-up this waiter got and did not use (it was already taking
		// a slot, or its time ran out) was counted against a free slot:
		// offer the pool to the waiters behind it, or that slot goes unused.
		select {
		case <-w.wake:
			m.rewake(p.pool)
		default:
		}
	}()
	timer := time.NewTimer(p.wait - time.Since(p.begun))
	defer timer.Stop()
	parker := parkerFrom(ctx)
	conflicts := 0
	// The first try follows the caller's, which synced the replica and
	// checked the pool: it only needs the replica's changes since (so
	// entering costs no store round trip while holding an in-flight slot).
	fresh := true
	for {
		// Registered first, then tried: a proxy freed in between still
		// leaves its wake-up in the channel.
		grant, c, err := m.commit(ctx, p, consumer, fresh)
		fresh = false
		conflicts += c
		if err != nil || grant != nil {
			return grant, conflicts, err
		}
		if parker != nil {
			parker.Park()
		}
		// A lease that expires frees its slot without a write, so nothing
		// wakes the waiter for it: wake at the earliest expiry too.
		var freeing <-chan time.Time
		var freeingTimer *time.Timer
		if d, ok := m.store.NextFreeing(); ok && d < p.wait-time.Since(p.begun) {
			freeingTimer = time.NewTimer(d)
			freeing = freeingTimer.C
		}
		var timedOut bool
		select {
		case <-w.wake:
		case <-freeing:
		case <-timer.C:
			timedOut = true
		case <-ctx.Done():
		}
		if freeingTimer != nil {
			freeingTimer.Stop()
		}
		if parker != nil {
			if err := parker.Unpark(ctx); err != nil {
				return nil, conflicts, fmt.Errorf("%w: acquire wait: %w", model.ErrUnavailable, err)
			}
		}
		if timedOut {
			// A last look, from the replica as it is: time alone may have
			// freed a slot since the last try.
			grant, c, err := m.commit(ctx, p, consumer, true)
			return grant, conflicts + c, err
		}
		if err := ctx.Err(); err != nil {
			return nil, conflicts, fmt.Errorf("%w: acquire wait: %w", model.ErrUnavailable, err)
		}
	}
}
