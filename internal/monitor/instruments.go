package monitor

import (
	"encoding/json"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
)

// instruments are the metrics updated as things happen. Their labels are
// bounded: pool names of pools that exist (a request naming one that does
// not is counted under pool=""), outcomes, operations and the contract's
// error codes; never lease, proxy or consumer ids.
type instruments struct {
	acquires  *prometheus.CounterVec   // pool, outcome
	releases  *prometheus.CounterVec   // pool, outcome
	renewals  *prometheus.CounterVec   // pool, outcome
	expired   *prometheus.CounterVec   // pool
	cooldowns *prometheus.CounterVec   // pool
	requests  *prometheus.HistogramVec // operation, code
	health    *prometheus.CounterVec   // result
	knownPool atomic.Pointer[func(string) bool]
}

// Acquire outcomes.
const (
	OutcomeGranted  = "granted"   // a lease was committed (acquired event)
	OutcomeNoneFree = "none_free" // no eligible proxy was free (acquire_failed event)
	OutcomeError    = "error"     // the request was refused or failed (any error code)
	// OutcomeReleased, OutcomeRenewed: the release or renewal this worker
	// committed (released, renewed events).
	OutcomeReleased = "released"
	OutcomeRenewed  = "renewed"
)

// RequestBuckets are the request histogram's bounds, in seconds: from a
// fraction of a millisecond (a request served from the replica) to the 60 s
// an acquire may wait.
func RequestBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

func newInstruments(reg prometheus.Registerer) *instruments {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	in := &instruments{
		acquires:  counter("pharox_acquire_total", "Acquires answered by this worker, by pool and outcome (granted, none_free, error; pool is empty for a pool that does not exist).", "pool", "outcome"),
		releases:  counter("pharox_release_total", "Releases by pool and outcome: released (this worker's write ended the lease), error (refused; pool empty). A release of a lease already ended is neither.", "pool", "outcome"),
		renewals:  counter("pharox_renew_total", "Renewals by pool and outcome (renewed, error; pool empty for errors).", "pool", "outcome"),
		expired:   counter("pharox_expired_total", "Leases this worker recorded as expired (by a sweep, cleanup or a write that pruned them), by pool.", "pool"),
		cooldowns: counter("pharox_cooldowns_total", "Cooldowns this worker's releases set or moved (cooldown events), by pool.", "pool"),
		health:    counter("pharox_health_checks_total", "Health-check probes this worker ran (sweeps and admin.health.check), by result status (active, slow, inactive).", "result"),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pharox_request_duration_seconds",
			Help:    "Requests answered, by operation and code (ok or the contract's error code): the time from taking the request off its subscription to the reply, as $SRV.STATS counts it.",
			Buckets: RequestBuckets(),
		}, []string{"operation", "code"}),
	}
	reg.MustRegister(in.requests)
	return in
}

// watch counts the outcomes the manager's callbacks report: they run once
// per committed change, on the worker that committed it.
func (in *instruments) watch(m *manager.Manager) {
	known := m.KnownPool
	in.knownPool.Store(&known)
	m.RegisterAcquireCallback(func(ev model.AcquireEvent) {
		outcome := OutcomeGranted
		if ev.Lease == nil {
			outcome = OutcomeNoneFree
		}
		in.acquires.WithLabelValues(ev.PoolName, outcome).Inc()
	})
	m.RegisterReleaseCallback(func(ev model.ReleaseEvent) {
		in.releases.WithLabelValues(ev.PoolName, OutcomeReleased).Inc()
	})
	m.RegisterRenewCallback(func(ev model.RenewedEvent) {
		in.renewals.WithLabelValues(ev.PoolName, OutcomeRenewed).Inc()
	})
	m.RegisterExpiredCallback(func(ev model.ExpiredEvent) {
		in.expired.WithLabelValues(ev.PoolName).Inc()
	})
	m.RegisterCooldownCallback(func(ev model.CooldownEvent) {
		in.cooldowns.WithLabelValues(ev.PoolName).Inc()
	})
}

// Observe implements broker.Observer: the request histogram, and the
// errors of acquire, release and renew (their successes come from the
// manager's callbacks, which know whether this request changed anything).
func (in *instruments) Observe(o broker.Observation) {
	in.requests.WithLabelValues(o.Operation, o.Code).Observe(o.Took.Seconds())
	if o.Status == 0 {
		return
	}
	switch o.Operation {
	case "acquire":
		in.acquires.WithLabelValues(in.poolOf(o), OutcomeError).Inc()
	case "release":
		in.releases.WithLabelValues("", OutcomeError).Inc()
	case "renew":
		in.renewals.WithLabelValues("", OutcomeError).Inc()
	}
}

// poolOf is the pool a refused acquire names, if that pool exists; "" for
// anything else, so that the label set stays the set of pools.
func (in *instruments) poolOf(o broker.Observation) string {
	if o.Code == "pool_not_found" || o.Code == "bad_request" || o.Code == "payload_too_large" {
		return ""
	}
	known := in.knownPool.Load()
	var req struct {
		PoolName string `json:"pool_name"`
	}
	if known == nil || json.Unmarshal(o.Body, &req) != nil || !(*known)(req.PoolName) {
		return ""
	}
	return req.PoolName
}

// probed counts one health-check probe (health.WithProbeHook).
func (in *instruments) probed(info health.ProbeInfo) {
	in.health.WithLabelValues(string(info.Result.Status)).Inc()
}

// ProbeHook is the health checker's hook that counts probes by result.
func (mon *Monitor) ProbeHook() func(health.ProbeInfo) { return mon.inst.probed }
