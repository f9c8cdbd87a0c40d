package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
)

// RetryOption configures AcquireWithRetry.
type RetryOption func(*retryConfig) error

type retryConfig struct {
	initial, max time.Duration
	attempts     int
}

// RetryBackoff sets the pause after the first failed try (default 100 ms)
// and the most it grows to (default 5 s): it doubles after every try, and
// each pause is drawn between half of it and all of it, so that clients
// refused together do not come back together.
func RetryBackoff(initial, max time.Duration) RetryOption {
	return func(c *retryConfig) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("client: retry backoff needs 0 < initial <= max, got %s and %s", initial, max)
		}
		c.initial, c.max = initial, max
		return nil
	}
}

// RetryAttempts bounds the tries (default 0: until ctx ends).
func RetryAttempts(n int) RetryOption {
	return func(c *retryConfig) error {
		if n < 0 {
			return fmt.Errorf("client: retry attempts must be >= 0 (0: until ctx ends), got %d", n)
		}
		c.attempts = n
		return nil
	}
}

// AcquireWithRetry is Acquire tried again, with exponential backoff and
// jitter, while the answer is "no proxy free" or a transient failure (503
// unavailable, no worker answering, a reply that did not come in time),
// until a lease is granted, ctx ends or the attempts run out. Any other
// error is returned at once.
//
// Every try carries the same request_id (req's, or a new one): an acquire
// whose reply was lost may have been granted, and its retry then gets that
// same lease back instead of a second one, so retrying never leaks a lease.
//
// When it gives up it returns an error wrapping the last try's failure
// (model.ErrNoProxyAvailable for "none free") and, if ctx ended, ctx's
// error too.
func (c *Client) AcquireWithRetry(ctx context.Context, req model.AcquireRequest, opts ...RetryOption) (*model.Lease, *model.Proxy, error) {
	cfg := retryConfig{initial: 100 * time.Millisecond, max: 5 * time.Second}
	for _, opt := range opts {
		if err := opt(&cfg); err != nil {
			return nil, nil, err
		}
	}
	if req.RequestID == nil {
		id := "retry-" + uuid.NewString()
		req.RequestID = &id
	}
	pause := cfg.initial
	var last error // the last answer a try got before ctx ended
	for try := 1; ; try++ {
		lease, proxy, err := c.Acquire(ctx, req)
		if err == nil && lease != nil {
			return lease, proxy, nil
		}
		if err == nil {
			err = fmt.Errorf("%w in pool %q", model.ErrNoProxyAvailable, req.PoolName)
		}
		if ctx.Err() != nil {
			// This try was cut short: the one before says more.
			return nil, nil, giveUp(cmp.Or(last, err), try, ctx.Err())
		}
		last = err
		if !errors.Is(err, model.ErrNoProxyAvailable) && !isTransient(err) {
			return nil, nil, err
		}
		if cfg.attempts > 0 && try >= cfg.attempts {
			return nil, nil, giveUp(err, try, nil)
		}
		retry.Sleep(ctx, pause)
		if ctx.Err() != nil {
			return nil, nil, giveUp(err, try, ctx.Err())
		}
		pause = min(2*pause, cfg.max)
	}
}

func giveUp(last error, tries int, ctxErr error) error {
	if ctxErr != nil && !errors.Is(last, ctxErr) {
		return fmt.Errorf("acquire gave up after %d tries: %w (%w)", tries, last, ctxErr)
	}
	return fmt.Errorf("acquire gave up after %d tries: %w", tries, last)
}

// NotProxyFault marks err as not the proxy's fault: WithLease then releases
// the lease without reporting a failure. It is model.NotProxyFault.
func NotProxyFault(err error) error { return model.NotProxyFault(err) }
