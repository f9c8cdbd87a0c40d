package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// LeaseFunc is the work WithLease runs while it holds a lease. Its ctx is
// cancelled when the caller's is, or when the lease could not be renewed
// (context.Cause(ctx) then says why).
type LeaseFunc func(ctx context.Context, lease model.Lease, proxy model.Proxy) error

// WithLease is pharox's with_lease: it acquires a lease, runs fn with it and
// always releases it afterwards, whether fn returns an error, panics (the
// panic goes on after the release) or the caller's ctx is cancelled (the
// release then runs on a context of its own, bounded by the client's
// timeout).
//
// While fn runs it renews the lease every half of its duration, so fn may
// run longer than the lease; if a renewal fails, fn's ctx is cancelled with
// that failure as its cause, and the failure is part of the returned error.
//
// With no eligible proxy free it returns an error wrapping
// model.ErrNoProxyAvailable without calling fn.
//
// The release reports how the proxy did (contract v1.1): success when fn
// returns nil; failure, with the error's text cut to 1024 code points as
// reason, when it returns an error. Nothing is reported when the error is
// marked with NotProxyFault (a bug, bad input, a target down for everyone),
// when fn panics, or when fn's ctx ended first (the caller gave up, or the
// lease could not be renewed): none of those is the proxy's doing.
func (c *Client) WithLease(ctx context.Context, req model.AcquireRequest, fn LeaseFunc) (err error) {
	sent := time.Now()
	lease, proxy, err := c.Acquire(ctx, req)
	if err != nil {
		return err
	}
	if lease == nil {
		return fmt.Errorf("%w in pool %q", model.ErrNoProxyAvailable, req.PoolName)
	}
	fctx, cancel := context.WithCancelCause(ctx)
	k := &keeper{c: c, lease: *lease, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go k.run(context.WithoutCancel(ctx), sent)
	// report: fn returned (no panic) while its ctx was alive; only then is
	// its error about the proxy.
	var fnErr error
	report := false
	defer func() {
		// Runs on return, on panic (which then goes on) and on Goexit.
		close(k.stop)
		<-k.done
		cancel(nil)
		if k.err != nil {
			err = errors.Join(err, k.err)
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer rcancel()
		consumer := lease.ConsumerName
		rel := model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: &consumer}
		if report {
			rel.Outcome, rel.Reason = model.OutcomeOf(fnErr)
		}
		if _, rerr := c.Release(rctx, rel); rerr != nil {
			err = errors.Join(err, fmt.Errorf("release lease %s (it lapses at its expiry): %w", lease.ID, rerr))
		}
	}()
	fnErr = fn(fctx, *lease, *proxy)
	report = fctx.Err() == nil // judged before the deferred release cancels fctx
	return fnErr
}

// keeper renews a lease every half of its duration until stopped.
type keeper struct {
	c      *Client
	lease  model.Lease
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}
	err    error // the renewal failure, read after done is closed
}

func (k *keeper) run(ctx context.Context, sent time.Time) {
	defer close(k.done)
	d := k.lease.ExpiresAt.Sub(k.lease.AcquiredAt)
	if d <= 0 {
		return
	}
	seconds := max(1, int(math.Round(d.Seconds())))
	interval := d / 2
	// Local clock only: the lease lapses no earlier than d after the request
	// that set it was sent.
	lapses := sent.Add(d)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	consumer := k.lease.ConsumerName
	for {
		select {
		case <-k.stop:
			return
		case <-timer.C:
		}
		for {
			attempt := time.Now()
			rctx, cancel := context.WithDeadline(ctx, minTime(attempt.Add(k.c.timeout), lapses))
			_, err := k.c.Renew(rctx, model.RenewRequest{LeaseID: k.lease.ID, DurationSeconds: &seconds, ConsumerName: &consumer})
			cancel()
			if err == nil {
				lapses = attempt.Add(d)
				break
			}
			if !isTransient(err) || time.Until(lapses) < 100*time.Millisecond {
				k.err = fmt.Errorf("renew lease %s: %w", k.lease.ID, err)
				k.cancel(k.err)
				return
			}
			select {
			case <-k.stop:
				return
			case <-time.After(min(250*time.Millisecond, time.Until(lapses)/4)):
			}
		}
		timer.Reset(interval)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
