package worker

import (
	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/kvstore"
)

// brokerObservers are the broker options that feed the monitor and the
// tracer, when the config has them.
func (c Config) brokerObservers() []broker.Option {
	var opts []broker.Option
	if c.Monitor != nil {
		opts = append(opts, broker.WithObserver(c.Monitor.Observer()))
	}
	if c.TracerProvider != nil {
		opts = append(opts, broker.WithTracerProvider(c.TracerProvider))
	}
	return opts
}

// healthObservers count health-check probes in the monitor.
func (c Config) healthObservers() []health.Option {
	if c.Monitor == nil {
		return nil
	}
	return []health.Option{health.WithProbeHook(c.Monitor.ProbeHook())}
}

// bindMonitor hands the running parts to the monitor: from now on its
// gauges read them and /readyz checks them.
func (w *Worker) bindMonitor() {
	if w.cfg.Monitor == nil {
		return
	}
	w.cfg.Monitor.Bind(monitor.Parts{Conn: w.cfg.Conn, Manager: w.Manager, Broker: w.Broker, Events: w.Events, Streams: Streams()})
}

// Streams are the JetStream streams a worker uses: its buckets' and the
// events stream.
func Streams() []string {
	var out []string
	for _, b := range []string{kvstore.PoolsBucket, kvstore.ProxiesBucket, kvstore.LeasesBucket, kvstore.ConsumersBucket,
		kvstore.RequestsBucket, events.OutboxBucket, health.ClaimsBucket, health.CountersBucket} {
		out = append(out, "KV_"+b)
	}
	return append(out, events.StreamName)
}
