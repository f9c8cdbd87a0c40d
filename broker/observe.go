package broker

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/tracing"
)

// Observer is told of every request the broker answers, right before its
// reply is sent, with the same processing time $SRV.STATS counts (from the
// moment the request was taken off its subscription, including any wait
// for an in-flight slot). Metrics hang off it; it must be quick.
type Observer interface {
	Observe(Observation)
}

// Observation is one answered request.
type Observation struct {
	// Operation is the endpoint's subject without the prefix: "acquire",
	// "admin.pools.create".
	Operation string
	// Body is the request body as received (do not keep it).
	Body []byte
	// Took is the processing time, as $SRV.STATS adds it up.
	Took time.Duration
	// Status is 0 for a success, else the micro error status (404, 503).
	Status int
	// Code is "ok", or the contract's error code ("pool_not_found").
	Code string
}

// WithObserver tells o of every request answered.
func WithObserver(o Observer) Option { return func(opts *options) { opts.observer = o } }

// WithTracerProvider records a server span per request with tp, a child
// of the span whose W3C traceparent the request carries (if any). The
// spans below it (decode, select, KV write, event publish) are children of
// it. Without it, with nil or with a no-op provider, no span is recorded.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(opts *options) {
		opts.tracer = nil
		if tp != nil {
			opts.tracer = tp.Tracer(tracing.ScopeName)
		}
	}
}

// Inflight is the number of requests holding one of the --max-inflight
// slots now (an acquire waiting for a proxy gives its slot back), with
// the admin.proxies.add requests being served in their own slots.
func (b *Broker) Inflight() int { return b.lease.inUse() + b.bulk.inUse() }

// observation follows one request from the moment it is served to its
// reply.
type observation struct {
	b         *Broker
	operation string
	msg       *nats.Msg
	span      trace.Span
}

// observe starts what follows a request: its server span, when tracing is
// on, in the returned context.
func (b *Broker) observe(ctx context.Context, subject string, msg *nats.Msg, received time.Time) (context.Context, observation) {
	o := observation{b: b, operation: strings.TrimPrefix(subject, b.opts.prefix+"."), msg: msg}
	if t := b.opts.tracer; t != nil {
		ctx = tracing.Extract(ctx, msg.Header)
		ctx, o.span = t.Start(ctx, subject, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(received),
			trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject),
				attribute.String("messaging.operation.type", "process"), attribute.String("pharox.operation", o.operation),
				attribute.Int("messaging.message.body.size", len(msg.Data))))
	}
	return ctx, o
}

// done records the request's outcome: the observer, then the span's end.
func (o observation) done(took time.Duration, status int, code string) {
	if obs := o.b.opts.observer; obs != nil {
		obs.Observe(Observation{Operation: o.operation, Body: o.msg.Data, Took: took, Status: status, Code: code})
	}
	if o.span != nil {
		o.span.SetAttributes(attribute.String("pharox.code", code))
		if status != 0 {
			o.span.SetAttributes(attribute.Int("pharox.status", status))
			if status >= 500 {
				o.span.SetStatus(codes.Error, code)
			}
		}
		o.span.End()
	}
}
