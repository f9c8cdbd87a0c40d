package client

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/tracing"
)

// WithTracerProvider records a client span per request with tp. Without
// it, a request whose context holds a recording span gets a client span
// from that span's provider, and a request whose context holds none
// records nothing. Either way the request carries the W3C traceparent of
// its context, so the worker's span joins the caller's trace.
// A nil tp is the default.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *Client) {
		c.tracer = nil
		if tp != nil {
			c.tracer = tp.Tracer(tracing.ScopeName)
		}
	}
}

// traceRequest starts the request's client span, if any, and writes the
// trace context into msg's headers. The returned func ends the span with
// the request's error.
func (c *Client) traceRequest(ctx context.Context, msg *nats.Msg) (context.Context, func(error)) {
	tracer := c.tracer
	if tracer == nil {
		parent := trace.SpanFromContext(ctx)
		if !parent.IsRecording() {
			tracing.Inject(ctx, msg) // a remote or unsampled parent still propagates
			return ctx, func(error) {}
		}
		tracer = parent.TracerProvider().Tracer(tracing.ScopeName)
	}
	ctx, span := tracer.Start(ctx, msg.Subject, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject),
			attribute.String("messaging.operation.type", "send"), attribute.Int("messaging.message.body.size", len(msg.Data))))
	tracing.Inject(ctx, msg)
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
