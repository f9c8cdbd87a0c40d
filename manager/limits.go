package manager

import (
	"fmt"

	"github.com/pharox/pharox-nats/model"
)

// DefaultMaxWaiters is how many acquires may wait (wait_seconds) on one
// manager at once unless WithMaxWaiters says otherwise.
const DefaultMaxWaiters = 10000

// WithMaxLeasesPerConsumer refuses an acquire by a consumer that already
// holds n active leases (over every pool) with model.ErrLimitReached (the
// contract's 429 limit_reached); 0, the default, sets no limit. The count
// is this manager's replica's, kept incrementally, and is read when the
// acquire is decided: acquires decided at the same moment by several
// workers may exceed the limit by the number in flight, as the contract
// allows. It costs no write.
func WithMaxLeasesPerConsumer(n int) Option { return func(o *options) { o.maxPerConsumer = n } }

// WithMaxWaiters bounds the acquires waiting for a proxy (wait_seconds) on
// this manager at once (default DefaultMaxWaiters); one more is refused
// with model.ErrUnavailable (503) at once, with nothing changed.
func WithMaxWaiters(n int) Option { return func(o *options) { o.maxWaiters = n } }

func (o options) validateLimits() []error {
	var errs []error
	if o.maxPerConsumer < 0 {
		errs = append(errs, fmt.Errorf("WithMaxLeasesPerConsumer must be 0 (no limit) or positive, got %d", o.maxPerConsumer))
	}
	if o.maxWaiters < 1 {
		errs = append(errs, fmt.Errorf("WithMaxWaiters must be positive, got %d", o.maxWaiters))
	}
	return errs
}

// checkConsumerLimit refuses an acquire by a consumer that holds as many
// active leases as the limit allows, as this worker's replica counts them
// now (leases that ran out no longer count).
func (m *Manager) checkConsumerLimit(consumer string) error {
	limit := m.opts.maxPerConsumer
	if limit == 0 {
		return nil
	}
	m.advance()
	if n := m.replica.ConsumerLeases(consumer); n >= limit {
		return limitReached(consumer, n, limit)
	}
	return nil
}

func limitReached(consumer string, held, limit int) error {
	return model.Errorf(model.ErrLimitReached, "consumer %q holds %d active leases, the workers' limit per consumer (--max-leases-per-consumer %d); release one first",
		consumer, held, limit)
}

// waitersFull is the refusal of a waiting acquire over WithMaxWaiters.
func waitersFull(limit int) error {
	return model.Errorf(model.ErrUnavailable, "%d acquires are already waiting for a proxy on this worker, its limit (--max-waiters %d); nothing was changed: retry, or ask without wait_seconds",
		limit, limit)
}

// Waiting is how many acquires are waiting for a proxy (wait_seconds) on
// this manager now.
func (m *Manager) Waiting() int {
	m.waiters.mu.Lock()
	defer m.waiters.mu.Unlock()
	return m.waiters.n
}
