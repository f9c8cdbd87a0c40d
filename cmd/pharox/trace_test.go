package main

import (
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
)

// TestCommandContinuesTheTraceOfItsEnvironment: a command run with
// TRACEPARENT set (and no exporter of its own) sends that trace context
// with its request: the worker's span is its child.
func TestCommandContinuesTheTraceOfItsEnvironment(t *testing.T) {
	srv := natstest.RunServer(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	w, err := worker.Start(t.Context(), worker.Config{Conn: natstest.Connect(t, srv), TracerProvider: tp})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(t.Context()) })
	h := &harness{t: t, srv: srv, url: srv.ClientURL(), env: map[string]string{"PHAROX_NATS_URL": srv.ClientURL()}}
	h.ok("pools", "create", "traced")
	exp.Reset()

	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := h.runEnv(map[string]string{"TRACEPARENT": "00-" + traceID + "-" + spanID + "-01"}, "stats", "--pool", "traced")
	require.Equal(t, 0, r.code, r)
	var found bool
	for _, s := range exp.GetSpans() {
		if s.Name == "pharox.stats" && s.SpanKind == trace.SpanKindServer {
			found = true
			require.Equal(t, traceID, s.SpanContext.TraceID().String())
			require.Equal(t, spanID, s.Parent.SpanID().String())
		}
	}
	require.True(t, found, "the worker recorded the stats request")

	// An exporter the CLI cannot have is refused as a usage error.
	r = h.runEnv(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "stats", "--pool", "traced")
	require.Equal(t, 2, r.code, r)
	require.Contains(t, r.stderr, "only http/protobuf is supported")
}
