// Package monitor is how a worker is watched: Prometheus metrics
// (instruments updated as requests are answered and leases change, and
// gauges read from the worker's replica at scrape time), and the liveness
// and readiness probes, served on one HTTP listener (Listen).
//
// A Monitor exists before its worker: the listener answers /healthz and a
// /readyz that says "starting" while the worker loads its replica; the
// worker assembly (internal/worker) binds it once its parts run.
package monitor

import (
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/manager"
)

// Monitor is one worker's metrics and readiness.
type Monitor struct {
	reg   *prometheus.Registry
	inst  *instruments
	parts atomic.Pointer[Parts]
	// draining is set when the worker was told to stop: not ready any more.
	draining atomic.Bool
}

// Parts are the running parts of a worker the monitor reads.
type Parts struct {
	Conn    *nats.Conn
	Manager *manager.Manager
	Broker  *broker.Broker
	Events  *events.Publisher
	// Streams are the JetStream streams the worker needs reachable to be
	// ready (its buckets' streams and the events stream).
	Streams []string
}

// New returns a monitor with its instruments registered, and the Go
// runtime's and the process's collectors.
func New() *Monitor {
	mon := &Monitor{reg: prometheus.NewRegistry()}
	mon.inst = newInstruments(mon.reg)
	mon.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scrape{mon: mon})
	return mon
}

// Registry is the monitor's registry, for tests and for programs that add
// collectors of their own.
func (mon *Monitor) Registry() *prometheus.Registry { return mon.reg }

// Observer is what the broker tells of every request it answers
// (broker.WithObserver).
func (mon *Monitor) Observer() broker.Observer { return mon.inst }

// Bind starts reading the worker's parts: the scrape-time gauges, and
// readiness. It registers the manager callbacks that count grants, empty
// acquires, releases, renewals and expiries per pool.
func (mon *Monitor) Bind(p Parts) {
	mon.inst.watch(p.Manager)
	mon.parts.Store(&p)
}

// Drain says the worker is stopping: /readyz answers 503 from now on, so
// load balancers and Kubernetes stop sending it work while it drains.
func (mon *Monitor) Drain() { mon.draining.Store(true) }
