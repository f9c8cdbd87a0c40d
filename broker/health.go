package broker

import (
	"context"

	"github.com/pharox/pharox-nats/model"
)

// HealthChecker runs pharox.admin.health.check: it probes the proxies asked
// for, applies each result as admin.health.apply does and replies with them.
// The health package's Checker is one; the broker takes it as an option so
// that it depends on no prober.
type HealthChecker interface {
	CheckHealth(ctx context.Context, req model.HealthCheckRequest) (model.HealthCheckReply, error)
}

// WithHealthChecker serves admin.health.check with c. Without it the
// endpoint answers 503 unavailable.
func WithHealthChecker(c HealthChecker) Option { return func(o *options) { o.health = c } }

func (b *Broker) checkHealth(ctx context.Context, r model.HealthCheckRequest) (any, error) {
	if b.opts.health == nil {
		return nil, model.Errorf(model.ErrUnavailable, "health checks are not enabled on this worker")
	}
	return b.opts.health.CheckHealth(ctx, r)
}
