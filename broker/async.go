package broker

import (
	"sync"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// asyncHook puts the broker in front of nc's error handler: errors NATS
// reports on the broker's own subscriptions (requests dropped as a slow
// consumer) are logged with their endpoint and counted in $SRV.STATS, as
// micro's ErrorHandler would; every other error goes on to the handler nc
// had before. NATS has one error handler per connection, so the hook stays
// chained after Stop and only forgets the broker.
type asyncHook struct {
	mu sync.Mutex
	b  *Broker
}

func hookAsyncErrors(nc *nats.Conn, b *Broker) *asyncHook {
	h := &asyncHook{b: b}
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if h.handle(sub, err) {
			return
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
	return h
}

// release forgets the broker: its subscriptions are gone.
func (h *asyncHook) release() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.b = nil
	h.mu.Unlock()
}

// handle reports whether sub was one of the broker's, after logging and
// counting the error.
func (h *asyncHook) handle(sub *nats.Subscription, err error) bool {
	h.mu.Lock()
	b := h.b
	h.mu.Unlock()
	if b == nil || sub == nil {
		return false
	}
	for _, s := range b.endpointSubs {
		if s == sub {
			msgs, bytes, _ := sub.Pending()
			dropped, _ := sub.Dropped()
			b.log.Warn("requests dropped: NATS reported an error on an endpoint's subscription (a slow consumer: every in-flight slot busy and its pending limit reached)",
				zap.String("subject", sub.Subject), zap.Error(err), zap.Int("pending_msgs", msgs), zap.Int("pending_bytes", bytes),
				zap.Int("dropped_total", dropped), zap.Int("max_inflight", b.opts.maxInflight))
			b.svc.recordAsync(sub.Subject, err)
			return true
		}
	}
	for _, s := range b.controlSubs {
		if s == sub {
			b.log.Warn("NATS reported an error on a $SRV subscription", zap.String("subject", sub.Subject), zap.Error(err))
			return true
		}
	}
	return false
}
