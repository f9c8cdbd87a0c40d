package gateway

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Request kinds, the kind label of the request metrics.
const (
	KindHTTP    = "http"    // a plain HTTP request forwarded
	KindConnect = "connect" // a CONNECT tunnel
	KindSOCKS5  = "socks5"  // a SOCKS5 connection
)

// Request outcomes, the outcome label of pharox_gateway_requests_total.
const (
	RequestOK             = "ok"              // the upstream answered, or the tunnel is open
	RequestNoProxy        = "no_proxy"        // 503: no proxy free (or the workers busy, or the gateway stopping)
	RequestUpstreamFailed = "upstream_failed" // 502: every proxy tried failed, or no worker answered
	RequestRefused        = "refused"         // 400, 403, 407, 429: the client's request or credentials
	RequestError          = "error"           // anything else (the client went away, ...)
)

// Lease acquisition outcomes, the outcome label of
// pharox_gateway_acquires_total.
const (
	AcquireGranted  = "granted"
	AcquireNoneFree = "none_free"
	AcquireError    = "error"
)

// Byte directions, the direction label of pharox_gateway_bytes_total.
const (
	ToClient   = "to_client"
	ToUpstream = "to_upstream"
)

// DurationBuckets are the request histogram's bounds, in seconds: from a
// refusal answered at once to an acquire that waited its 60 s.
func DurationBuckets() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

// metrics are a gateway's Prometheus instruments, in a registry of its own.
// Their labels are bounded: kinds, outcomes, directions, and pool names of
// pools the workers answered for (a grant or "none free"); a pool a client
// made up in its username is counted under pool="".
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec   // kind, outcome
	acquires *prometheus.CounterVec   // pool, outcome
	leases   *prometheus.CounterVec   // pool, outcome
	duration *prometheus.HistogramVec // kind
	toClient prometheus.Counter
	toUp     prometheus.Counter
	tunnels  prometheus.Gauge
	// byKind holds the request series of each kind, looked up once here:
	// WithLabelValues hashes its labels and takes a lock on every call,
	// which every request would pay.
	byKind map[string]kindSeries

	mu    sync.RWMutex
	known map[string]struct{} // pools the workers answered for
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), known: map[string]struct{}{}}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	m.requests = counter("pharox_gateway_requests_total",
		"Requests answered, by kind (http, connect, socks5) and outcome (ok; no_proxy: 503; upstream_failed: 502; refused: 400, 403, 407, 429; error).",
		"kind", "outcome")
	m.acquires = counter("pharox_gateway_acquires_total",
		"Acquires sent to the workers, by pool and outcome (granted, none_free, error); pool is empty for an error, unless the workers answered for that pool before.",
		"pool", "outcome")
	m.leases = counter("pharox_gateway_leases_total",
		"Leases this gateway released, by pool and the outcome it reported (success, failure; none when the client cut the use short).",
		"pool", "outcome")
	bytes := counter("pharox_gateway_bytes_total",
		"Bytes carried: tunnels both ways, forwarded request and response bodies, by direction (to_client, to_upstream). A tunnel's bytes are counted when it ends.",
		"direction")
	m.toClient, m.toUp = bytes.WithLabelValues(ToClient), bytes.WithLabelValues(ToUpstream)
	m.tunnels = prometheus.NewGauge(prometheus.GaugeOpts{Name: "pharox_gateway_open_tunnels",
		Help: "CONNECT tunnels and SOCKS5 connections carrying bytes now."})
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pharox_gateway_sessions",
		Help: "Sticky sessions this gateway holds a lease of that has not lapsed."},
		func() float64 { return float64(g.sessions.held(g.clock())) })
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pharox_gateway_request_duration_seconds",
		Help:    "Time from a request's arrival to the upstream's answer (http), to the open tunnel (connect, socks5), or to the refusal, by kind.",
		Buckets: DurationBuckets()}, []string{"kind"})
	m.reg.MustRegister(m.tunnels, sessions, m.duration)
	// Every series that exists from the start shows as 0 before it moves.
	m.byKind = map[string]kindSeries{}
	for _, k := range []string{KindHTTP, KindConnect, KindSOCKS5} {
		ks := kindSeries{duration: m.duration.WithLabelValues(k), requests: map[string]prometheus.Counter{}}
		for _, o := range []string{RequestOK, RequestNoProxy, RequestUpstreamFailed, RequestRefused, RequestError} {
			ks.requests[o] = m.requests.WithLabelValues(k, o)
		}
		m.byKind[k] = ks
	}
	return m
}

// kindSeries are the request series of one kind.
type kindSeries struct {
	duration prometheus.Observer
	requests map[string]prometheus.Counter // by outcome
}

// answered counts a request of kind answered with gerr (nil: ok), started
// at start.
func (m *metrics) answered(kind string, start time.Time, gerr *Error) {
	ks := m.byKind[kind]
	ks.duration.Observe(time.Since(start).Seconds())
	ks.requests[requestOutcome(gerr)].Inc()
}

// requestOutcome is the outcome label of an answer.
func requestOutcome(gerr *Error) string {
	if gerr == nil {
		return RequestOK
	}
	switch gerr.Status {
	case http.StatusServiceUnavailable:
		return RequestNoProxy
	case http.StatusBadGateway:
		return RequestUpstreamFailed
	case http.StatusBadRequest, http.StatusForbidden, http.StatusProxyAuthRequired,
		http.StatusRequestHeaderFieldsTooLarge, http.StatusTooManyRequests:
		return RequestRefused
	}
	return RequestError
}

// pool is the pool label of p: p once the workers answered for it, else "".
func (m *metrics) pool(p string) string {
	m.mu.RLock()
	_, ok := m.known[p]
	m.mu.RUnlock()
	if ok {
		return p
	}
	return ""
}

// exists records that the workers answered for pool p (it exists).
func (m *metrics) exists(p string) {
	m.mu.RLock()
	_, ok := m.known[p]
	m.mu.RUnlock()
	if ok {
		return
	}
	m.mu.Lock()
	m.known[p] = struct{}{}
	m.mu.Unlock()
}

// acquired counts an acquire's answer: lease granted, none free (both say
// the pool exists), or refused.
func (m *metrics) acquired(p string, granted bool, gerr *Error) {
	switch {
	case gerr == nil:
		m.exists(p)
		outcome := AcquireNoneFree
		if granted {
			outcome = AcquireGranted
		}
		m.acquires.WithLabelValues(p, outcome).Inc()
	case gerr.Code == "pool_not_found":
		m.acquires.WithLabelValues("", AcquireError).Inc()
	default:
		m.acquires.WithLabelValues(m.pool(p), AcquireError).Inc()
	}
}

// released counts a release the workers accepted, with the outcome it
// reported.
func (m *metrics) released(p string, outcome Outcome) {
	o := string(outcome)
	if outcome == OutcomeNone {
		o = "none"
	}
	m.leases.WithLabelValues(m.pool(p), o).Inc()
}

// tunnel counts a tunnel open while fn runs, and the bytes it carried.
func (m *metrics) tunnel(fn func() copied) copied {
	m.tunnels.Inc()
	c := fn()
	m.tunnels.Dec()
	m.toUp.Add(float64(c.up))
	m.toClient.Add(float64(c.down))
	return c
}

// Gatherer is the gateway's metrics, in a registry of its own (serve it
// with promhttp.HandlerFor). Its series are named pharox_gateway_*.
func (g *Gateway) Gatherer() prometheus.Gatherer { return g.metrics.reg }
