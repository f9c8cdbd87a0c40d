package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// use is one request's, tunnel's or SOCKS connection's use of a lease:
// either a lease of its own, released when the use ends, or its session's,
// which outlives it.
type use struct {
	g     *Gateway
	sp    *spec
	lease model.Lease
	proxy model.Proxy
	sess  *session
	tr    *http.Transport // the session's, for plain HTTP requests
	conns *keptConns      // the session's, for those fastPath takes
	dur   time.Duration

	mu       sync.Mutex
	renewed  time.Time // (g.clock) when the request that last set expires_at was sent
	deadline time.Time // (g.clock) the lease lapses then unless renewed
	timer    *time.Timer
	onLost   func()
	ended    bool
}

// noRetry marks an attempt whose failure must not be retried on another
// proxy (the request's body has been sent).
type noRetry struct{ error }

func (e noRetry) Unwrap() error { return e.error }

// obtain leases a proxy for sp and runs attempt with it, which opens the
// upstream side. An attempt's error is the proxy's failure: its lease is
// released with outcome failure and another proxy is tried, passing the
// failed ones in exclude_proxy_ids, up to g.retries more times.
func (g *Gateway) obtain(ctx context.Context, sp *spec, attempt func(ctx context.Context, u *use) error) (*use, *Error) {
	var failed []string
	last := ""
	tries := 0
	for tries <= g.retries {
		u, gerr := g.leaseFor(ctx, sp, failed)
		if gerr != nil {
			if tries > 0 && gerr.Code == errNoProxy(sp.pool, sp.wait).Code {
				// Every proxy left after the failed ones is taken or there
				// is none: the answer is the upstream failure, not "busy".
				break
			}
			return nil, gerr
		}
		tries++
		err := attempt(ctx, u)
		if err == nil {
			u.start()
			return u, nil
		}
		if ctx.Err() != nil { // the client went away: not the proxy's fault
			u.end(OutcomeNone, "")
			return nil, &Error{Status: 499, Code: "client_gone", Message: ctx.Err().Error()}
		}
		last = scrub(err.Error(), u.proxy.Credentials)
		g.log.Debug("upstream failed", zap.String("pool", sp.pool), zap.String("proxy_id", u.proxy.ID),
			zap.String("lease_id", u.lease.ID), zap.String("error", last))
		u.end(OutcomeFailure, last)
		failed = append(failed, u.proxy.ID)
		if errors.As(err, new(noRetry)) {
			break
		}
	}
	return nil, errUpstream(tries, last)
}

// leaseFor returns a use of sp's session lease, or of a lease of its own.
func (g *Gateway) leaseFor(ctx context.Context, sp *spec, exclude []string) (*use, *Error) {
	if sp.session != "" {
		return g.sessionUse(ctx, sp, exclude)
	}
	lease, proxy, sent, gerr := g.acquire(ctx, sp, exclude, nil, g.leaseSeconds)
	if gerr != nil {
		return nil, gerr
	}
	dur := time.Duration(g.leaseSeconds) * time.Second
	return &use{g: g, sp: sp, lease: *lease, proxy: *proxy, dur: dur, renewed: sent, deadline: sent.Add(dur)}, nil
}

// acquire asks the workers for a lease; sent is when it asked (g.clock).
func (g *Gateway) acquire(ctx context.Context, sp *spec, exclude []string, requestID *string, seconds int) (*model.Lease, *model.Proxy, time.Time, *Error) {
	consumer := sp.consumer
	req := AcquireRequest{
		AcquireRequest: model.AcquireRequest{PoolName: sp.pool, ConsumerName: &consumer, DurationSeconds: &seconds,
			Filters: sp.filters, Selector: sp.selector, RequestID: requestID},
		Protocols:       sp.protocols,
		ExcludeProxyIDs: exclude,
	}
	if sp.wait > 0 {
		w := sp.wait
		req.WaitSeconds = &w
	}
	actx, cancel := context.WithTimeout(ctx, g.requestTimeout+time.Duration(sp.wait*float64(time.Second)))
	defer cancel()
	sent := g.clock()
	lease, proxy, err := g.leaser.Acquire(actx, req)
	if err != nil {
		gerr := fromWorker(err)
		g.metrics.acquired(sp.pool, false, gerr)
		return nil, nil, sent, gerr
	}
	g.metrics.acquired(sp.pool, lease != nil, nil)
	if lease == nil {
		return nil, nil, sent, errNoProxy(sp.pool, sp.wait)
	}
	return lease, proxy, sent, nil
}

// release ends a lease of the gateway's own, on a context of its own (the
// client may be gone); a failure is logged, and the lease lapses at its
// expiry.
func (g *Gateway) release(lease model.Lease, outcome Outcome, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), g.requestTimeout)
	defer cancel()
	consumer := lease.ConsumerName
	err := g.leaser.Release(ctx, ReleaseRequest{ReleaseRequest: model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: &consumer},
		Outcome: outcome, Reason: reason})
	if err != nil {
		g.log.Warn("release failed; the lease lapses at its expiry", zap.String("lease_id", lease.ID),
			zap.Time("expires_at", lease.ExpiresAt), zap.Error(err))
		return
	}
	g.metrics.released(lease.PoolName, outcome)
}

// start keeps the lease alive while the use lasts: it is renewed once more
// than a third of its duration has passed since its last renewal.
func (u *use) start() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.schedule()
}

// schedule arms the next renewal; u.mu is held.
func (u *use) schedule() {
	next := u.renewed.Add(u.dur/3 + 10*time.Millisecond).Sub(u.g.clock())
	u.timer = time.AfterFunc(max(next, 0), u.tick)
}

func (u *use) tick() {
	u.mu.Lock()
	if u.ended {
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	var renewed, deadline time.Time
	var err error
	if u.sess != nil {
		renewed, deadline, err = u.g.touchSession(u.sess, u.lease.ID)
	} else {
		renewed, deadline, err = u.g.renewOwn(u.lease, u.dur)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ended {
		return
	}
	if err == nil {
		u.renewed, u.deadline = renewed, deadline
		u.schedule()
		return
	}
	left := u.deadline.Sub(u.g.clock())
	if transient(err) && left > 500*time.Millisecond {
		u.timer = time.AfterFunc(250*time.Millisecond, u.tick)
		return
	}
	u.g.log.Warn("lease lost; its tunnel closes at expires_at", zap.String("lease_id", u.lease.ID),
		zap.String("proxy_id", u.proxy.ID), zap.Duration("in", left), zap.Error(err))
	u.timer = time.AfterFunc(max(left, 0), u.lose)
}

func (u *use) lose() {
	u.mu.Lock()
	lost := u.onLost
	ended := u.ended
	u.mu.Unlock()
	if lost != nil && !ended {
		lost()
	}
}

// setLost names what closes the use's connections when its lease ends
// under it.
func (u *use) setLost(fn func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.onLost = fn
}

// end stops the renewals and releases a lease of the use's own with its
// outcome; a session's lease is released only on a failure (the next
// request starts a new one), else it ends by expiry.
func (u *use) end(outcome Outcome, reason string) {
	u.mu.Lock()
	if u.ended {
		u.mu.Unlock()
		return
	}
	u.ended = true
	if u.timer != nil {
		u.timer.Stop()
	}
	u.mu.Unlock()
	if u.sess != nil {
		if outcome == OutcomeFailure {
			u.g.failSession(u.sess, u.lease, reason)
		}
		return
	}
	u.g.release(u.lease, outcome, reason)
}

// renewOwn renews a lease of the gateway's own for dur.
func (g *Gateway) renewOwn(lease model.Lease, dur time.Duration) (renewed, deadline time.Time, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.requestTimeout)
	defer cancel()
	seconds := int(dur / time.Second)
	consumer := lease.ConsumerName
	sent := g.clock()
	if _, err := g.leaser.Renew(ctx, model.RenewRequest{LeaseID: lease.ID, DurationSeconds: &seconds, ConsumerName: &consumer}); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return sent, sent.Add(dur), nil
}

// transient reports whether a failed renewal may succeed if retried.
func transient(err error) bool {
	return errors.Is(err, model.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// ended reports whether a renewal failed because the lease is over.
func leaseOver(err error) bool {
	return errors.Is(err, model.ErrLeaseNotActive) || errors.Is(err, model.ErrLeaseNotFound) || errors.Is(err, errReplaced)
}

var errReplaced = errors.New("the session has moved to another lease")

// scrub keeps a proxy's password out of a message.
func scrub(msg string, c *model.Credentials) string {
	if c == nil || c.Password == "" {
		return msg
	}
	return strings.ReplaceAll(msg, c.Password, "***")
}
