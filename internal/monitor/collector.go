package monitor

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pharox/pharox-nats/model"
)

// scrape is the collector that reads the worker's state when Prometheus
// scrapes, rather than updating gauges on every write: the pools' gauges
// from the replica's incremental counts (a scrape costs the number of
// pools, not of proxies), the manager's and broker's counters, and the
// replica's lag (two JetStream round trips).
type scrape struct{ mon *Monitor }

// lagTimeout bounds the replica-lag read of one scrape.
const lagTimeout = 2 * time.Second

// poolGauge is one per-pool gauge read from a pool's statistics.
type poolGauge struct {
	desc  *prometheus.Desc
	value func(model.PoolStatsSnapshot) int
}

func poolGauges() []poolGauge {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"pool"}, nil)
	}
	return []poolGauge{
		{desc("pharox_pool_available_proxies", "Proxies that can take a lease now (active and below max_concurrency), from this worker's replica."),
			func(s model.PoolStatsSnapshot) int { return s.AvailableProxies }},
		{desc("pharox_pool_leased_proxies", "Proxies holding at least one active lease."),
			func(s model.PoolStatsSnapshot) int { return s.LeasedProxies }},
		{desc("pharox_pool_active_leases", "Active leases of the pool."),
			func(s model.PoolStatsSnapshot) int { return s.TotalLeases }},
		{desc("pharox_pool_cooling_proxies", "Active proxies in cooldown after failures (cooldown_until in the future): not available until it ends."),
			func(s model.PoolStatsSnapshot) int { return s.CoolingProxies }},
	}
}

var (
	poolProxiesDesc = prometheus.NewDesc("pharox_pool_proxies", "Proxies of the pool by status, from this worker's replica.", []string{"pool", "status"}, nil)
	conflictsDesc   = prometheus.NewDesc("pharox_cas_conflicts_total", "Revision-checked writes this worker lost to a concurrent one and retried.", nil, nil)
	waitersDesc     = prometheus.NewDesc("pharox_waiters", "Acquires parked waiting for a proxy to free up (wait_seconds).", nil, nil)
	inflightDesc    = prometheus.NewDesc("pharox_inflight_requests", "Requests holding one of the worker's --max-inflight slots.", nil, nil)
	publishDesc     = prometheus.NewDesc("pharox_event_publish_failures_total", "Event publishes that failed (each failed attempt; failed events are retried until stored).", nil, nil)
	lagDesc         = prometheus.NewDesc("pharox_replica_lag_seconds", "How far this worker's replica is behind the pools and proxies streams: the time between a stream's last write and the newest write the replica applied (0: caught up).", nil, nil)
)

func (s *scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range poolGauges() {
		ch <- g.desc
	}
	for _, d := range []*prometheus.Desc{poolProxiesDesc, conflictsDesc, waitersDesc, inflightDesc, publishDesc, lagDesc} {
		ch <- d
	}
}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	p := s.mon.parts.Load()
	if p == nil {
		return // not bound yet: the worker is starting
	}
	gauges := poolGauges()
	for _, pg := range p.Manager.PoolGauges() {
		pool := pg.Stats.PoolName
		for status, n := range pg.ByStatus {
			ch <- prometheus.MustNewConstMetric(poolProxiesDesc, prometheus.GaugeValue, float64(n), pool, string(status))
		}
		for _, g := range gauges {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(g.value(pg.Stats)), pool)
		}
	}
	ch <- prometheus.MustNewConstMetric(conflictsDesc, prometheus.CounterValue, float64(p.Manager.Counters().Conflicts))
	ch <- prometheus.MustNewConstMetric(waitersDesc, prometheus.GaugeValue, float64(p.Manager.Waiters()))
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(p.Broker.Inflight()))
	ch <- prometheus.MustNewConstMetric(publishDesc, prometheus.CounterValue, float64(p.Events.PublishFailures()))
	ctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
	defer cancel()
	lag, err := p.Manager.ReplicaLag(ctx)
	if err != nil {
		// The scrape goes on without it; readiness reports the store.
		ch <- prometheus.NewInvalidMetric(lagDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag.Seconds())
}
