package main

import (
	"context"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/internal/telemetry"
	"github.com/pharox/pharox-nats/tracing"
)

// Tracing of a command: with an OTLP endpoint in the OTEL_* variables, a
// span per command (its requests' client spans below it, the workers'
// spans below those); with TRACEPARENT (and TRACESTATE, BAGGAGE) in the
// environment, the command continues that trace, so a shell script's or a
// CI job's trace reaches the workers even when the command exports
// nothing. Long-running commands (gateway, top, events) get no span of
// their own: their requests would all hang off one span for hours.

// untracedCommands run too long for one span.
func untracedCommand(name string) bool {
	return name == "gateway" || name == "top" || name == "events"
}

// traceCommand sets up tracing for the command about to run and returns
// what ends it.
func (a *app) traceCommand(cmd *cobra.Command) (func(), error) {
	tr, err := telemetry.FromEnv(cmd.Context(), "pharox-cli", a.getenv)
	if err != nil {
		return nil, usageError{err}
	}
	ctx := envTraceContext(cmd.Context(), a.getenv)
	var span trace.Span
	if tr.Exporting && !untracedCommand(cmd.Name()) {
		ctx, span = tr.Provider.Tracer(tracing.ScopeName).Start(ctx, cmd.CommandPath())
	}
	cmd.SetContext(ctx)
	return func() {
		if span != nil {
			span.End()
		}
		sctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		_ = tr.Shutdown(sctx)
	}, nil
}

// envTraceContext is ctx with the trace context of the TRACEPARENT,
// TRACESTATE and BAGGAGE variables, if set (the convention for carrying a
// trace into a process through its environment).
func envTraceContext(ctx context.Context, getenv func(string) string) context.Context {
	carrier := propagation.MapCarrier{}
	for header, env := range map[string]string{"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE", "baggage": "BAGGAGE"} {
		if v := getenv(env); v != "" {
			carrier[header] = v
		}
	}
	if len(carrier) == 0 {
		return ctx
	}
	return tracing.Propagator().Extract(ctx, carrier)
}
