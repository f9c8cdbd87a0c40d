// Package telemetry sets up OpenTelemetry tracing for pharox's programs
// (the worker, the pharox command line) from the standard OTEL_*
// environment variables: tracing is on when an OTLP endpoint is given, and
// costs a no-op tracer otherwise.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a tracer provider and what ends it.
type Tracing struct {
	Provider trace.TracerProvider
	// Exporting says spans are sent somewhere (an OTLP endpoint was given).
	Exporting bool
	// Endpoint is where, for the start-up log line.
	Endpoint string
	shutdown func(context.Context) error
}

// Shutdown sends the spans still buffered and stops the exporter.
func (t Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// FromEnv returns the tracing the environment asks for, read with getenv:
//
//   - OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set:
//     spans are exported with OTLP over HTTP/protobuf in batches (the
//     exporter reads the other OTEL_EXPORTER_OTLP_* variables itself:
//     headers, timeout, TLS); OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
//     describe the process (service.name defaults to service);
//     OTEL_TRACES_SAMPLER chooses the sampler (default parentbased_always_on).
//   - otherwise, or with OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true:
//     a no-op provider, whose spans cost nothing.
//
// OTEL_EXPORTER_OTLP_PROTOCOL other than http/protobuf is refused: pharox
// carries no gRPC exporter.
func FromEnv(ctx context.Context, service string, getenv func(string) string) (Tracing, error) {
	off := Tracing{Provider: noop.NewTracerProvider()}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" || getenv("OTEL_TRACES_EXPORTER") == "none" || getenv("OTEL_SDK_DISABLED") == "true" {
		return off, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(name); p != "" && p != "http/protobuf" {
			return off, fmt.Errorf("%s=%q: only http/protobuf is supported (unset it, or point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port, 4318)", name, p)
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return off, fmt.Errorf("OTLP trace exporter for %s: %w", endpoint, err)
	}
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return off, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)), sdktrace.WithResource(res))
	return Tracing{Provider: tp, Exporting: true, Endpoint: endpoint, shutdown: tp.Shutdown}, nil
}
