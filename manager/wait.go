package manager

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// Parker lets a caller that bounds concurrent work (the broker's in-flight
// slots) take back a waiting acquire's slot while it sleeps. Park gives the
// slot up; Unpark takes one again before the acquire retries.
type Parker interface {
	Park()
	Unpark(ctx context.Context) error
}

// Stopper is a Parker whose caller can stop serving (a worker shutting
// down). When Stopping closes, a waiting acquire tries once more and, if
// nothing is free, gives up at once with ErrUnavailable: its wait was cut
// short, so "none free" ({"lease": null}) would not be true, and nothing
// was changed.
type Stopper interface {
	Stopping() <-chan struct{}
}

// AcquireOption tunes one AcquireProxy call.
type AcquireOption func(*acquireOptions)

type acquireOptions struct {
	parker Parker
}

// ParkWith makes a waiting acquire (wait_seconds) give the caller's slot
// back through p while it sleeps and take one again before it retries.
func ParkWith(p Parker) AcquireOption { return func(o *acquireOptions) { o.parker = p } }

// waitQueue holds the acquires waiting for a proxy to free up, per pool, in
// arrival order. They sleep on a channel until the replica installs a proxy
// version that could serve them: no polling, no CPU while idle.
type waitQueue struct {
	mu     sync.Mutex
	byPool map[string]*list.List
	n, max int // waiters now, and at most (WithMaxWaiters)
}

type waiter struct {
	p    acquireParams
	wake chan struct{}
	// rearm asks the sleeper to set its expiry alarm again: a lease that
	// runs out before alarm (store clock, under the queue's lock; zero
	// while being set) was installed.
	rearm chan struct{}
	alarm time.Time
}

func newWaitQueue(limit int) *waitQueue {
	return &waitQueue{byPool: map[string]*list.List{}, max: limit}
}

// add queues a waiter; with max waiters queued already it refuses (503).
func (q *waitQueue) add(p acquireParams) (*waiter, func(), error) {
	w := &waiter{p: p, wake: make(chan struct{}, 1), rearm: make(chan struct{}, 1)}
	q.mu.Lock()
	if q.n >= q.max {
		q.mu.Unlock()
		return nil, nil, waitersFull(q.max)
	}
	q.n++
	l := q.byPool[p.pool]
	if l == nil {
		l = list.New()
		q.byPool[p.pool] = l
	}
	el := l.PushBack(w)
	q.mu.Unlock()
	return w, func() {
		q.mu.Lock()
		q.n--
		l.Remove(el)
		if l.Len() == 0 && q.byPool[p.pool] == l {
			delete(q.byPool, p.pool)
		}
		q.mu.Unlock()
	}, nil
}

// offer wakes, first come first served, as many waiting acquires whose
// filters the proxy matches as it has free slots. It is told of every proxy
// version the replica installs and of every proxy whose leases ran out or
// whose cooldown ended.
func (m *Manager) offer(rec *record.Proxy) {
	if rec.Status != model.ProxyActive || rec.CredentialsUnreadable() {
		return
	}
	q := m.waiters
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.byPool[rec.PoolName]
	if l == nil {
		return
	}
	now := m.now()
	horizon := now.Add(-m.opts.grace)
	attrs := rec.Attrs()
	serves := func(w *waiter) bool {
		_, out := w.p.exclude[rec.ID]
		return !out && w.p.filters.Matches(attrs)
	}
	// A lease of this version that runs out, or a cooldown that ends,
	// before a waiter's alarm frees a slot with no write: that waiter sets
	// its alarm again. Alarms are on the horizon's axis.
	var next time.Time
	for _, h := range rec.Holders {
		if h.ExpiresAt.After(horizon) && (next.IsZero() || h.ExpiresAt.Before(next)) {
			next = h.ExpiresAt
		}
	}
	cooling := rec.Cooling(now)
	if cooling {
		if end := rec.CooldownUntil.Add(-m.opts.grace); next.IsZero() || end.Before(next) {
			next = end
		}
	}
	if !next.IsZero() {
		for el := l.Front(); el != nil; el = el.Next() {
			w := el.Value.(*waiter)
			if (w.alarm.IsZero() || next.Before(w.alarm)) && serves(w) {
				select {
				case w.rearm <- struct{}{}:
				default:
				}
			}
		}
	}
	if cooling {
		return
	}
	free := -1 // unlimited
	if rec.MaxConcurrency != nil {
		free = *rec.MaxConcurrency - rec.LiveHolders(horizon)
		if free <= 0 {
			return
		}
	}
	for el := l.Front(); el != nil && free != 0; el = el.Next() {
		w := el.Value.(*waiter)
		if !serves(w) {
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
	var recs []*record.Proxy
	m.replica.Members(pool, 0, func(rec *record.Proxy) bool {
		recs = append(recs, rec)
		return true
	})
	for _, rec := range recs {
		m.offer(rec)
	}
}

// wait sleeps until a proxy that could serve p frees up, then tries again,
// until p.wait has passed since started. While asleep it holds no in-flight
// slot of the caller's (see Parker) and costs no CPU.
func (m *Manager) wait(ctx context.Context, p acquireParams, consumer model.Consumer, started time.Time, parker Parker) (*grant, int, error) {
	w, remove, err := m.waiters.add(p)
	if err != nil {
		return nil, 0, err
	}
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
	var stop <-chan struct{}
	if s, ok := parker.(Stopper); ok {
		stop = s.Stopping()
	}
	conflicts := 0
	// The first try follows the caller's, which synced the replica and
	// checked the pool: it only needs the replica's changes since (so
	// entering costs no store round trip while holding an in-flight slot).
	fresh := true
	for first := true; ; first = false {
		if !first {
			m.counters.retries.Add(1)
		}
		// Registered first, then tried: a proxy freed in between still
		// leaves its wake-up in the channel.
		grant, c, err := m.commit(ctx, p, consumer, started, fresh)
		fresh = false
		conflicts += c
		if err != nil || grant != nil {
			return grant, conflicts, err
		}
		if closed(stop) {
			// That was the one more try the stop allows.
			return nil, conflicts, model.Errorf(model.ErrUnavailable, "this worker is stopping: the acquire's wait was cut short with no proxy free; nothing was changed, retry it")
		}
		if parker != nil {
			parker.Park()
		}
		timedOut := m.sleep(ctx, w, timer, p, stop)
		if parker != nil {
			if err := parker.Unpark(ctx); err != nil {
				return nil, conflicts, model.Errorf(model.ErrUnavailable, "acquire wait: %w", err)
			}
		}
		if closed(stop) {
			// Woken by the stop: one more try, from the replica as it is
			// (the feed keeps it current), then the loop gives up.
			fresh = true
			continue
		}
		if timedOut {
			// A last look, from the replica as it is: time alone may have
			// freed a slot since the last try.
			m.counters.retries.Add(1)
			grant, c, err := m.commit(ctx, p, consumer, started, true)
			return grant, conflicts + c, err
		}
		if err := ctx.Err(); err != nil {
			return nil, conflicts, model.Errorf(model.ErrUnavailable, "acquire wait: %w", err)
		}
	}
}

// sleep waits for a wake-up, the end of the wait or of ctx, or the
// caller's stop. A lease that
// expires frees its slot without any write, so the sleeper also has an
// alarm at the earliest expiry the replica knows of (set again when an
// earlier one is installed) to have it counted: that tells the proxy's
// waiters, in order and as many as it can serve, through the change hook,
// once, whichever waiter gets there first. An expiry of another pool, or of
// a lease already released, wakes nobody for good.
func (m *Manager) sleep(ctx context.Context, w *waiter, timer *time.Timer, p acquireParams, stop <-chan struct{}) (timedOut bool) {
	q := m.waiters
	for {
		q.mu.Lock()
		w.alarm = time.Time{} // any expiry installed meanwhile sets it again
		q.mu.Unlock()
		var freeing <-chan time.Time
		var freeingTimer *time.Timer
		left := p.wait - time.Since(p.begun)
		alarm := m.now().Add(left)
		if d, ok := m.nextFreeing(); ok && d < left {
			freeingTimer = time.NewTimer(d)
			freeing = freeingTimer.C
			alarm = m.horizon().Add(d)
		}
		q.mu.Lock()
		w.alarm = alarm
		q.mu.Unlock()
		m.counters.sleeps.Add(1)
		rearm := false
		select {
		case <-w.wake:
		case <-w.rearm:
			rearm = true
		case <-freeing:
			m.advance()
			rearm = true
		case <-timer.C:
			timedOut = true
		case <-ctx.Done():
		case <-stop:
		}
		if freeingTimer != nil {
			freeingTimer.Stop()
		}
		if !rearm {
			return timedOut
		}
	}
}

// closed reports whether ch is closed; a nil ch never is.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// nextFreeing is when the earliest lease the replica counts stops counting
// (its expiry plus the grace) or the earliest cooldown ends, as a duration
// from now: slots free up then without any write. ok is false when there
// is neither.
func (m *Manager) nextFreeing() (time.Duration, bool) {
	at, ok := m.replica.NextExpiry()
	if !ok {
		return 0, false
	}
	return max(at.Add(m.opts.grace).Sub(m.now()), time.Millisecond), true
}
