// Package broker serves the pharox contract as a NATS micro service: it
// decodes and validates requests, calls the manager, maps errors to the
// contract's codes in one place and encodes replies.
package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/manager"
)

// Version is the service version shown by $SRV.INFO: 1.1.0 since the
// workers implement the contract's v1.1 additions.
const Version = "1.1.0"

// Body limits of the contract.
const (
	MaxBody        = 64 << 10
	MaxProxiesBody = 1 << 20
)

// Broker is one worker's micro service.
type Broker struct {
	nc   *nats.Conn
	m    *manager.Manager
	opts options
	log  *zap.Logger
	svc  *service
	// lease serves every endpoint but admin.proxies.add, which has bulk
	// (see intake).
	lease, bulk *intake
	wg          sync.WaitGroup // requests taken off a subscription and not answered yet
	// stopping closes when Stop begins: requests still delivered are
	// refused with 503 and waiting acquires are cut short.
	stopping     chan struct{}
	stopStarting sync.Once

	endpointSubs     []*nats.Subscription
	controlSubs      []*nats.Subscription
	hook, intakeHook *asyncHook

	// Stop drains each set of subscriptions once and may wait again.
	drainEndpoints, drainControl   sync.Once
	endpointsClosed, controlClosed []draining
	drainErr                       error
}

// Start subscribes the endpoints and the $SRV control subjects on nc. It
// refuses options that cannot work, naming them. Errors NATS reports on the
// broker's subscriptions (a slow consumer dropping requests) are logged and
// counted; nc's own error handler, if any, still gets every other one, so
// set it before Start.
func Start(nc *nats.Conn, m *manager.Manager, opts ...Option) (*Broker, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if nc == nil || m == nil {
		return nil, errors.New("broker: a NATS connection and a manager are required")
	}
	if o.requestContext == nil {
		timeout := o.timeout
		o.requestContext = func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), timeout)
		}
	}
	b := &Broker{nc: nc, m: m, opts: o, log: o.log, stopping: make(chan struct{}),
		lease: newIntake("leasing and admin", o.maxInflight, o.lineMsgs, o.lineBytes),
		bulk:  newIntake(bulkEndpoint, o.bulkSlots, o.bulkLine, o.bulkBytes)}
	eps := b.endpoints()
	b.svc = newService(o.prefix, eps)
	for _, ep := range eps {
		subject := o.prefix + "." + ep.subject
		conn, in := nc, b.lease
		if ep.subject == bulkEndpoint {
			in = b.bulk
			if o.intakeConn != nil {
				conn = o.intakeConn
			}
		}
		sub, err := conn.QueueSubscribe(subject, micro.DefaultQueueGroup, b.handler(ep, subject, in))
		if sub != nil {
			b.endpointSubs = append(b.endpointSubs, sub)
		}
		if err != nil {
			b.abort()
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
	}
	subs, err := b.svc.subscribeControl(nc, b.log)
	b.controlSubs = subs
	if err != nil {
		b.abort()
		return nil, err
	}
	// Only now: the hook reads the subscription lists.
	b.hook = hookAsyncErrors(nc, b)
	if o.intakeConn != nil && o.intakeConn != nc {
		b.intakeHook = hookAsyncErrors(o.intakeConn, b)
	}
	return b, nil
}

// abort undoes a Start that failed half-way.
func (b *Broker) abort() {
	for _, sub := range append(b.endpointSubs, b.controlSubs...) {
		_ = sub.Unsubscribe()
	}
	b.hook.release()
	b.intakeHook.release()
}

// Subjects lists every subject served.
func (b *Broker) Subjects() []string {
	var out []string
	for _, ep := range b.svc.info.Endpoints {
		out = append(out, ep.Subject)
	}
	return out
}

// Info is what $SRV.INFO answers for this worker.
func (b *Broker) Info() micro.Info { return b.svc.Info() }

// Stats is what $SRV.STATS answers for this worker.
func (b *Broker) Stats() micro.Stats { return b.svc.Stats() }

// Stop stops taking requests and waits, until ctx ends, for the requests in
// flight to be answered; then it stops answering $SRV. When ctx ends first
// it returns why; Stop may be called again to wait longer.
//
// In order: the endpoints' subscriptions are drained, so that the server
// sends new requests to the other workers of the queue group; a request
// NATS had already delivered to this worker is answered 503 (nothing
// changed) rather than served; an acquire waiting for a proxy
// (wait_seconds) tries once more and, if nothing is free, is answered 503
// at once; the requests being served finish as usual.
func (b *Broker) Stop(ctx context.Context) error {
	b.drainEndpoints.Do(func() { b.endpointsClosed, b.drainErr = drain(b.endpointSubs) })
	b.stopStarting.Do(func() {
		close(b.stopping)
		b.lease.stop()
		b.bulk.stop()
	})
	if b.drainErr != nil {
		return fmt.Errorf("stop taking requests: %w", b.drainErr)
	}
	if err := waitClosed(ctx, b.endpointsClosed); err != nil {
		return fmt.Errorf("stop taking requests: %w", err)
	}
	// No endpoint callback runs any more, so nothing adds to wg.
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("requests still in flight: %w", ctx.Err())
	}
	b.drainControl.Do(func() { b.controlClosed, b.drainErr = drain(b.controlSubs) })
	if b.drainErr != nil {
		return fmt.Errorf("stop answering $SRV: %w", b.drainErr)
	}
	if err := waitClosed(ctx, b.controlClosed); err != nil {
		return fmt.Errorf("stop answering $SRV: %w", err)
	}
	b.hook.release()
	b.intakeHook.release()
	return nil
}

// draining is a subscription being drained and what tells when it is
// closed, which NATS does once the callbacks of every message it had
// delivered have returned.
type draining struct {
	sub    *nats.Subscription
	closed <-chan nats.SubStatus
}

// drain starts draining subs. A subscription the connection's close
// already ended has nothing to wait for.
func drain(subs []*nats.Subscription) ([]draining, error) {
	var out []draining
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
				continue
			}
			return nil, fmt.Errorf("%s: %w", sub.Subject, err)
		}
		out = append(out, draining{sub: sub, closed: ch})
	}
	return out, nil
}

// waitClosed waits for every subscription drain started to close, until
// ctx ends. A subscription whose connection was closed meanwhile ends the
// wait too: it delivers nothing more, and NATS does not report the
// subscriptions a connection's close ended.
func waitClosed(ctx context.Context, subs []draining) error {
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for _, d := range subs {
	wait:
		for {
			select {
			case <-d.closed:
				break wait
			case <-poll.C:
				if !d.sub.IsValid() {
					break wait
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}
