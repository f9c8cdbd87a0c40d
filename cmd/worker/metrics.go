package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/internal/telemetry"
)

// defaultMetricsListen is where the embedded-server worker (go run
// ./cmd/worker) serves its metrics and probes unless told otherwise.
const defaultMetricsListen = "127.0.0.1:9464"

func (c config) validateMetrics() error {
	if c.MetricsListen == "" || c.MetricsListen == "off" {
		return nil
	}
	if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil || port == "" {
		return fmt.Errorf("--metrics-listen must be host:port (127.0.0.1:9464, :9464) or off, got %q", c.MetricsListen)
	}
	return nil
}

// observing is the worker's monitor, its HTTP listener (nil when off) and
// its tracing.
type observing struct {
	monitor *monitor.Monitor
	server  *monitor.Server
	tracing telemetry.Tracing
}

// startObserving creates the monitor, serves it on --metrics-listen, and
// sets up tracing from the OTEL_* variables. An address given explicitly
// that cannot be bound fails the start; the embedded mode's default one
// only warns (another worker on this machine may have it).
func startObserving(ctx context.Context, cfg config, embedded bool, log *zap.Logger) (*observing, error) {
	obs := &observing{monitor: monitor.New()}
	addr := cfg.MetricsListen
	if addr == "" && embedded {
		addr = defaultMetricsListen
	}
	if addr != "" && addr != "off" {
		srv, err := monitor.Listen(addr, obs.monitor, log.Named("monitor"))
		switch {
		case err == nil:
			obs.server = srv
		case cfg.MetricsListen == "":
			log.Warn("metrics not served: the default address is taken (give --metrics-listen)", zap.String("metrics_listen", addr), zap.Error(err))
		default:
			return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
		}
	}
	tr, err := telemetry.FromEnv(ctx, "pharox-worker", os.Getenv)
	if err != nil {
		obs.close(log)
		return nil, err
	}
	obs.tracing = tr
	return obs, nil
}

// addr is where metrics are served, "off" when nowhere.
func (o *observing) addr() string {
	if o.server == nil {
		return "off"
	}
	return o.server.Addr()
}

// close stops the listener and sends the spans still buffered.
func (o *observing) close(log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if o.server != nil {
		if err := o.server.Close(ctx); err != nil {
			log.Warn("metrics listener not closed cleanly", zap.Error(err))
		}
	}
	if err := o.tracing.Shutdown(ctx); err != nil {
		log.Warn("spans not all exported", zap.Error(err))
	}
}
