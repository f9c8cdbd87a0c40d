// Package tracing carries OpenTelemetry traces across NATS: a
// propagation.TextMapCarrier over nats.Header (W3C traceparent and
// tracestate, and baggage), and a span helper that costs nothing when no
// trace is being recorded.
//
// pharox uses no global tracer provider: the worker's broker is given one
// (broker.WithTracerProvider), starts a server span per request from the
// traceparent the request carries, and every span below it (decode,
// select, KV write, event publish) is started from the provider of the
// span in its context. A client span is started from the caller's context
// the same way, so a program that traces its own work gets pharox's spans
// in its traces with nothing to configure.
package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of pharox's spans.
const ScopeName = "github.com/pharox/pharox-nats"

// Propagator is the propagation pharox speaks on NATS headers: W3C Trace
// Context and W3C Baggage, what OpenTelemetry's contrib instrumentations
// use by default.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier. NATS
// header names are case-sensitive; Get falls back to a case-insensitive
// match so that a client writing "Traceparent" is understood too.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	h := nats.Header(c)
	if v := h.Get(key); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx into msg's headers, creating them
// if needed. Without a valid span context in ctx it changes nothing, so an
// untraced request carries no header.
func Inject(ctx context.Context, msg *nats.Msg) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	Propagator().Inject(ctx, HeaderCarrier(msg.Header))
}

// Extract returns ctx with the remote span context (and baggage) the
// headers carry, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator().Extract(ctx, HeaderCarrier(h))
}

// Start starts a child span of the span in ctx, with that span's tracer
// provider. When nothing is recorded (no span, or one not sampled) it
// returns ctx unchanged and a no-op span, allocating nothing.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, trace.SpanFromContext(context.Background()) // the no-op span, shared
	}
	return parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, trace.WithAttributes(attrs...))
}
