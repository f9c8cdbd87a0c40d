package tracing_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// TestTraceCrossesNATS: one client acquire, in a trace of the caller's,
// gives a client span and, in the worker across NATS, a server span whose
// parent is that client span, with the request's steps as its children.
func TestTraceCrossesNATS(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	ctx := t.Context()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(ctx) })
	w, err := worker.Start(ctx, worker.Config{Conn: nc, TracerProvider: tp})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(t.Context()) })

	c := client.New(nc, client.WithTimeout(10*time.Second))
	_, err = c.CreatePool(ctx, model.PoolCreateRequest{Name: "traced"})
	require.NoError(t, err)
	_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "traced", Proxies: []model.ProxyInput{{Host: "127.0.0.1", Port: 3128}}})
	require.NoError(t, err)
	// Untraced requests carry no traceparent: their server spans are roots,
	// and no client span was recorded.
	servers := 0
	for _, s := range exp.GetSpans() {
		require.NotEqual(t, trace.SpanKindClient, s.SpanKind, s.Name)
		if s.SpanKind == trace.SpanKindServer {
			servers++
			require.False(t, s.Parent.IsValid(), "%s has a parent", s.Name)
		}
	}
	require.Equal(t, 2, servers)
	exp.Reset()

	jobCtx, job := tp.Tracer("test").Start(ctx, "scrape job")
	lease, _, err := c.Acquire(jobCtx, model.AcquireRequest{PoolName: "traced"})
	require.NoError(t, err)
	require.NotNil(t, lease)
	job.End()

	spans := exp.GetSpans()
	clientSpan := find(t, spans, "pharox.acquire", trace.SpanKindClient)
	serverSpan := find(t, spans, "pharox.acquire", trace.SpanKindServer)
	require.Equal(t, job.SpanContext().SpanID(), clientSpan.Parent.SpanID(), "the client span is the caller's child")
	require.Equal(t, clientSpan.SpanContext.SpanID(), serverSpan.Parent.SpanID(), "the worker's span is the client span's child")
	require.True(t, serverSpan.Parent.IsRemote(), "its parent came over NATS")
	require.Equal(t, job.SpanContext().TraceID(), serverSpan.SpanContext.TraceID())
	for _, step := range []string{"pharox.decode", "pharox.select", "pharox.kv.update", "pharox.events.publish"} {
		s := find(t, spans, step, trace.SpanKindInternal)
		require.Equal(t, serverSpan.SpanContext.SpanID(), s.Parent.SpanID(), "%s is a step of the request", step)
	}

	// Another client's header name in another case is understood.
	exp.Reset()
	_, parent := tp.Tracer("test").Start(ctx, "python job")
	sc := parent.SpanContext()
	msg := &nats.Msg{Subject: "pharox.stats", Data: []byte(`{"pool_name":"traced"}`), Header: nats.Header{}}
	msg.Header.Set("Traceparent", "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01")
	_, err = nc.RequestMsg(msg, 10*time.Second)
	require.NoError(t, err)
	stats := find(t, exp.GetSpans(), "pharox.stats", trace.SpanKindServer)
	require.Equal(t, sc.SpanID(), stats.Parent.SpanID())
}

func find(t *testing.T, spans tracetest.SpanStubs, name string, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name && s.SpanKind == kind {
			found = append(found, s)
		}
	}
	require.Len(t, found, 1, "spans named %s of kind %s", name, kind)
	return found[0]
}
