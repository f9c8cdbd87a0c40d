// Package model holds the wire types of the pharox contract and the sentinel
// errors every layer branches on. It imports no other package of this module,
// so kvstore, manager, broker, events and clients can all share it.
package model

import (
	"net"
	"net/url"
	"strconv"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Protocol is how a proxy is spoken to.
type Protocol string

const (
	ProtocolHTTP   Protocol = "http"
	ProtocolHTTPS  Protocol = "https"
	ProtocolSOCKS4 Protocol = "socks4"
	ProtocolSOCKS5 Protocol = "socks5"
)

// Valid reports whether p is one of the contract's protocols.
func (p Protocol) Valid() bool {
	switch p {
	case ProtocolHTTP, ProtocolHTTPS, ProtocolSOCKS4, ProtocolSOCKS5:
		return true
	}
	return false
}

// ProxyStatus is the health state of a proxy; only active proxies are leased.
type ProxyStatus string

const (
	ProxyActive   ProxyStatus = "active"
	ProxyInactive ProxyStatus = "inactive"
	ProxySlow     ProxyStatus = "slow"
	ProxyBanned   ProxyStatus = "banned"
)

// Valid reports whether s is one of the contract's proxy statuses.
func (s ProxyStatus) Valid() bool {
	switch s {
	case ProxyActive, ProxyInactive, ProxySlow, ProxyBanned:
		return true
	}
	return false
}

// LeaseStatus is the life-cycle state of a lease.
type LeaseStatus string

const (
	LeaseActive   LeaseStatus = "active"
	LeaseReleased LeaseStatus = "released"
	LeaseExpired  LeaseStatus = "expired"
)

// Selector names a strategy for choosing among eligible proxies.
type Selector string

const (
	SelectorFirstAvailable Selector = "first_available"
	SelectorLeastUsed      Selector = "least_used"
	SelectorRoundRobin     Selector = "round_robin"
	SelectorRandom         Selector = "random"
	// SelectorLowestLatency (v1.1) picks the eligible proxy with the smallest
	// latency_ms; proxies never measured come last, in added order.
	SelectorLowestLatency Selector = "lowest_latency"
)

// Valid reports whether s is one of the contract's selectors.
func (s Selector) Valid() bool {
	switch s {
	case SelectorFirstAvailable, SelectorLeastUsed, SelectorRoundRobin, SelectorRandom, SelectorLowestLatency:
		return true
	}
	return false
}

// Credentials authenticate against a proxy. They are never logged.
type Credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// Proxy is the contract's Proxy model. Pointer fields are nullable.
type Proxy struct {
	ID             string       `json:"id"`
	PoolID         string       `json:"pool_id"`
	PoolName       string       `json:"pool_name"`
	Host           string       `json:"host"`
	Port           int          `json:"port"`
	Protocol       Protocol     `json:"protocol"`
	Status         ProxyStatus  `json:"status"`
	CheckedAt      *time.Time   `json:"checked_at"`
	Credentials    *Credentials `json:"credentials"`
	Source         *string      `json:"source"`
	Country        *string      `json:"country"`
	City           *string      `json:"city"`
	Latitude       *float64     `json:"latitude"`
	Longitude      *float64     `json:"longitude"`
	ISP            *string      `json:"isp"`
	ASN            *int64       `json:"asn"`
	MaxConcurrency *int         `json:"max_concurrency"`
	CurrentLeases  int          `json:"current_leases"`
	URL            string       `json:"url"`
	// LatencyMs is the latency of the last health result recorded for the
	// proxy (v1.1); null if none was.
	LatencyMs *float64 `json:"latency_ms"`
	// ConsecutiveFailures counts the failures reported on release since the
	// last success (v1.1).
	ConsecutiveFailures int `json:"consecutive_failures"`
	// CooldownUntil is when the proxy's last cooldown ends (v1.1); while it
	// is in the future the proxy is not leased.
	CooldownUntil *time.Time `json:"cooldown_until"`
}

// ProxyURL renders scheme://user:pass@host:port with the credentials
// URL-encoded and IPv6 hosts in brackets, as the contract asks.
func ProxyURL(protocol Protocol, host string, port int, cred *Credentials) string {
	u := url.URL{Scheme: string(protocol), Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if cred != nil {
		u.User = url.UserPassword(cred.User, cred.Password)
	}
	return u.String()
}

// Lease is the contract's Lease model.
type Lease struct {
	ID           string      `json:"id"`
	ProxyID      string      `json:"proxy_id"`
	PoolID       string      `json:"pool_id"`
	PoolName     string      `json:"pool_name"`
	ConsumerID   string      `json:"consumer_id"`
	ConsumerName string      `json:"consumer_name"`
	Status       LeaseStatus `json:"status"`
	AcquiredAt   time.Time   `json:"acquired_at"`
	ExpiresAt    time.Time   `json:"expires_at"`
	ReleasedAt   *time.Time  `json:"released_at"`
	FencingToken uint64      `json:"fencing_token"`
}

// PoolStatsSnapshot is the contract's pool statistics.
type PoolStatsSnapshot struct {
	PoolName         string `json:"pool_name"`
	TotalProxies     int    `json:"total_proxies"`
	ActiveProxies    int    `json:"active_proxies"`
	AvailableProxies int    `json:"available_proxies"`
	LeasedProxies    int    `json:"leased_proxies"`
	TotalLeases      int    `json:"total_leases"`
	// CoolingProxies are the active proxies in cooldown (v1.1): counted in
	// ActiveProxies, not in AvailableProxies.
	CoolingProxies int       `json:"cooling_proxies"`
	CollectedAt    time.Time `json:"collected_at"`
}

// Consumer is a named holder of leases.
type Consumer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ProxyPool is a named set of proxies.
type ProxyPool struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Description *string      `json:"description"`
	HealthCheck *HealthCheck `json:"health_check"`
	// Cooldown (v1.1) takes a proxy out of rotation after failures reported
	// on release; nil is off.
	Cooldown *Cooldown `json:"cooldown"`
}

// HealthCheck is a pool's health-check schedule.
type HealthCheck struct {
	Enabled          bool                `json:"enabled"`
	IntervalSeconds  float64             `json:"interval_seconds"`
	FailureThreshold int                 `json:"failure_threshold"`
	Options          *HealthCheckOptions `json:"options"`
}

// HealthCheckOptions mirrors pharox's HealthCheckOptions.
type HealthCheckOptions struct {
	TargetURL           string            `json:"target_url"`
	Timeout             float64           `json:"timeout"`
	Attempts            int               `json:"attempts"`
	ExpectedStatusCodes []int             `json:"expected_status_codes"`
	SlowThresholdMs     float64           `json:"slow_threshold_ms"`
	AllowRedirects      bool              `json:"allow_redirects"`
	Headers             map[string]string `json:"headers"`
}

// HealthCheckResult mirrors pharox's HealthCheckResult.
type HealthCheckResult struct {
	ProxyID      string      `json:"proxy_id"`
	Status       ProxyStatus `json:"status"`
	LatencyMs    float64     `json:"latency_ms"`
	Protocol     Protocol    `json:"protocol"`
	Attempts     int         `json:"attempts"`
	StatusCode   *int        `json:"status_code"`
	CheckedAt    time.Time   `json:"checked_at"`
	ErrorMessage *string     `json:"error_message"`
}

// UnmarshalJSON fills pharox's defaults for the fields a request leaves out
// (expected_status_codes [200], slow_threshold_ms 2000, allow_redirects
// true, timeout 5, attempts 1) and refuses unknown fields.
func (o *HealthCheckOptions) UnmarshalJSON(b []byte) error {
	p := healthCheckDefaults()
	if err := decodeStrict(b, &p); err != nil {
		return err
	}
	o.set(p)
	return nil
}

// UnmarshalJSONFrom is UnmarshalJSON for the json/v2 API, which the
// workers decode requests with, under the caller's options (exact names,
// no duplicates, no unknown fields).
func (o *HealthCheckOptions) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	p := healthCheckDefaults()
	if err := jsonv2.UnmarshalDecode(dec, &p); err != nil {
		return err
	}
	o.set(p)
	return nil
}

// plainHealthCheckOptions decodes without the methods above.
type plainHealthCheckOptions HealthCheckOptions

func healthCheckDefaults() plainHealthCheckOptions {
	return plainHealthCheckOptions{Timeout: 5, Attempts: 1, ExpectedStatusCodes: []int{200}, SlowThresholdMs: 2000,
		AllowRedirects: true, Headers: map[string]string{}}
}

func (o *HealthCheckOptions) set(p plainHealthCheckOptions) {
	if p.Headers == nil {
		p.Headers = map[string]string{}
	}
	if p.ExpectedStatusCodes == nil {
		p.ExpectedStatusCodes = []int{200}
	}
	*o = HealthCheckOptions(p)
}
