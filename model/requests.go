package model

import (
	"bytes"
	"encoding/json"
	"regexp"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Defaults and bounds of the contract.
const (
	DefaultConsumer        = "default"
	DefaultDurationSeconds = 300
	MaxDurationSeconds     = 86400
	MaxWaitSeconds         = 60
	MaxRequestIDLen        = 128
	MaxProxiesPerAdd       = 1000
	DefaultListLimit       = 100
	MaxListLimit           = 1000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidName reports whether s is a valid pool or consumer name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// CheckName returns a bad-request error naming field when s is not a valid name.
func CheckName(field, s string) error {
	if !ValidName(s) {
		return Errorf(ErrBadRequest, "%s must match ^[A-Za-z0-9_-]{1,128}$, got %q", field, s)
	}
	return nil
}

// Optional distinguishes a field that was absent from one set to null, which
// partial updates need: absent keeps the value, null clears it.
type Optional[T any] struct {
	Set   bool
	Value *T
}

// Some returns an Optional set to v.
func Some[T any](v T) Optional[T] { return Optional[T]{Set: true, Value: &v} }

// Null returns an Optional explicitly set to null.
func Null[T any]() Optional[T] { return Optional[T]{Set: true} }

// UnmarshalJSON implements json.Unmarshaler; nested objects keep refusing
// unknown fields.
func (o *Optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		o.Value = nil
		return nil
	}
	var v T
	if err := decodeStrict(b, &v); err != nil {
		return err
	}
	o.Value = &v
	return nil
}

// decodeStrict decodes b into v refusing unknown fields: the encoding/json
// path of the types whose nested objects must keep refusing them, where a
// plain json.Unmarshal would not.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// UnmarshalJSONFrom is UnmarshalJSON for the json/v2 API, which the
// workers decode requests with: the value is decoded with the caller's
// options (exact names, no duplicates, no unknown fields).
func (o *Optional[T]) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	o.Set = true
	if dec.PeekKind() == 'n' {
		_, err := dec.ReadToken()
		o.Value = nil
		return err
	}
	var v T
	if err := jsonv2.UnmarshalDecode(dec, &v); err != nil {
		return err
	}
	o.Value = &v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (o Optional[T]) MarshalJSON() ([]byte, error) {
	if o.Value == nil {
		return []byte("null"), nil
	}
	return json.Marshal(o.Value)
}

// AcquireRequest is the body of pharox.acquire.
type AcquireRequest struct {
	PoolName        string        `json:"pool_name"`
	ConsumerName    *string       `json:"consumer_name,omitempty"`
	DurationSeconds *int          `json:"duration_seconds,omitempty"`
	Filters         *ProxyFilters `json:"filters,omitempty"`
	Selector        *Selector     `json:"selector,omitempty"`
	WaitSeconds     *float64      `json:"wait_seconds,omitempty"`
	RequestID       *string       `json:"request_id,omitempty"`
	// ExcludeProxyIDs (v1.1) are never chosen, whatever the selector and
	// filters: at most 100 UUID strings.
	ExcludeProxyIDs []string `json:"exclude_proxy_ids,omitempty"`
}

// ReleaseRequest is the body of pharox.release.
type ReleaseRequest struct {
	LeaseID      string  `json:"lease_id"`
	ConsumerName *string `json:"consumer_name,omitempty"`
	// Outcome and Reason (v1.1) report how the proxy did; a Reason needs an
	// Outcome. See ReleaseSuccess and ReleaseFailure.
	Outcome *Outcome `json:"outcome,omitempty"`
	Reason  *string  `json:"reason,omitempty"`
}

// RenewRequest is the body of pharox.renew.
type RenewRequest struct {
	LeaseID         string  `json:"lease_id"`
	DurationSeconds *int    `json:"duration_seconds,omitempty"`
	ConsumerName    *string `json:"consumer_name,omitempty"`
}

// LeaseGetRequest is the body of pharox.leases.get.
type LeaseGetRequest struct {
	LeaseID string `json:"lease_id"`
}

// EmptyRequest is the body of operations that take no arguments.
type EmptyRequest struct{}

// StatsRequest is the body of pharox.stats.
type StatsRequest struct {
	PoolName string `json:"pool_name"`
}

// PoolCreateRequest is the body of pharox.admin.pools.create.
type PoolCreateRequest struct {
	Name        string    `json:"name"`
	Description *string   `json:"description,omitempty"`
	Cooldown    *Cooldown `json:"cooldown,omitempty"`
}

// PoolUpdateRequest is the body of pharox.admin.pools.update.
type PoolUpdateRequest struct {
	Name        string                `json:"name"`
	Description Optional[string]      `json:"description,omitzero"`
	HealthCheck Optional[HealthCheck] `json:"health_check,omitzero"`
	Cooldown    Optional[Cooldown]    `json:"cooldown,omitzero"`
}

// PoolDeleteRequest is the body of pharox.admin.pools.delete.
type PoolDeleteRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// ProxyInput is one proxy of pharox.admin.proxies.add.
type ProxyInput struct {
	Host           string       `json:"host"`
	Port           int          `json:"port"`
	Protocol       *Protocol    `json:"protocol,omitempty"`
	Status         *ProxyStatus `json:"status,omitempty"`
	Credentials    *Credentials `json:"credentials,omitempty"`
	Source         *string      `json:"source,omitempty"`
	Country        *string      `json:"country,omitempty"`
	City           *string      `json:"city,omitempty"`
	Latitude       *float64     `json:"latitude,omitempty"`
	Longitude      *float64     `json:"longitude,omitempty"`
	ISP            *string      `json:"isp,omitempty"`
	ASN            *int64       `json:"asn,omitempty"`
	MaxConcurrency *int         `json:"max_concurrency,omitempty"`
}

// ProxiesAddRequest is the body of pharox.admin.proxies.add.
type ProxiesAddRequest struct {
	PoolName string       `json:"pool_name"`
	Proxies  []ProxyInput `json:"proxies"`
}

// ProxiesListRequest is the body of pharox.admin.proxies.list.
type ProxiesListRequest struct {
	PoolName string       `json:"pool_name"`
	Status   *ProxyStatus `json:"status,omitempty"`
	Limit    *int         `json:"limit,omitempty"`
	Cursor   *string      `json:"cursor,omitempty"`
}

// ProxyGetRequest is the body of pharox.admin.proxies.get.
type ProxyGetRequest struct {
	ProxyID string `json:"proxy_id"`
}

// ProxyUpdateRequest is the body of pharox.admin.proxies.update: only the
// fields that are set change; null clears a nullable field.
type ProxyUpdateRequest struct {
	ProxyID        string                `json:"proxy_id"`
	Host           Optional[string]      `json:"host,omitzero"`
	Port           Optional[int]         `json:"port,omitzero"`
	Protocol       Optional[Protocol]    `json:"protocol,omitzero"`
	Status         Optional[ProxyStatus] `json:"status,omitzero"`
	Credentials    Optional[Credentials] `json:"credentials,omitzero"`
	Source         Optional[string]      `json:"source,omitzero"`
	Country        Optional[string]      `json:"country,omitzero"`
	City           Optional[string]      `json:"city,omitzero"`
	Latitude       Optional[float64]     `json:"latitude,omitzero"`
	Longitude      Optional[float64]     `json:"longitude,omitzero"`
	ISP            Optional[string]      `json:"isp,omitzero"`
	ASN            Optional[int64]       `json:"asn,omitzero"`
	MaxConcurrency Optional[int]         `json:"max_concurrency,omitzero"`
	// ConsecutiveFailures (>= 0, not null) and CooldownUntil (an RFC 3339
	// time, or null to end a cooldown) are v1.1's feedback state.
	ConsecutiveFailures Optional[int]    `json:"consecutive_failures,omitzero"`
	CooldownUntil       Optional[string] `json:"cooldown_until,omitzero"`
}

// ProxyDeleteRequest is the body of pharox.admin.proxies.delete.
type ProxyDeleteRequest struct {
	ProxyID string `json:"proxy_id"`
	Force   bool   `json:"force,omitempty"`
}

// ConsumerEnsureRequest is the body of pharox.admin.consumers.ensure.
type ConsumerEnsureRequest struct {
	Name string `json:"name"`
}

// HealthApplyRequest is the body of pharox.admin.health.apply.
type HealthApplyRequest struct {
	ProxyID      string      `json:"proxy_id"`
	Status       ProxyStatus `json:"status"`
	LatencyMs    float64     `json:"latency_ms"`
	Protocol     Protocol    `json:"protocol"`
	Attempts     *int        `json:"attempts,omitempty"`
	StatusCode   *int        `json:"status_code,omitempty"`
	CheckedAt    *string     `json:"checked_at,omitempty"`
	ErrorMessage *string     `json:"error_message,omitempty"`
}

// AcquireReply is the reply of pharox.acquire; both are null when no proxy is free.
type AcquireReply struct {
	Lease *Lease `json:"lease"`
	Proxy *Proxy `json:"proxy"`
}

// LeaseReply is the reply of release, renew and leases.get.
type LeaseReply struct {
	Lease *Lease `json:"lease"`
}

// CleanupReply is the reply of pharox.cleanup.
type CleanupReply struct {
	Released int `json:"released"`
}

// PoolsReply is the reply of pharox.admin.pools.list.
type PoolsReply struct {
	Pools []ProxyPool `json:"pools"`
}

// ProxiesReply is the reply of pharox.admin.proxies.add.
type ProxiesReply struct {
	Proxies []Proxy `json:"proxies"`
}

// ProxiesPage is the reply of pharox.admin.proxies.list.
type ProxiesPage struct {
	Proxies    []Proxy `json:"proxies"`
	NextCursor *string `json:"next_cursor"`
}

// DeletedReply is the reply of the delete operations.
type DeletedReply struct {
	Deleted bool `json:"deleted"`
}

// ConsumersReply is the reply of pharox.admin.consumers.list.
type ConsumersReply struct {
	Consumers []Consumer `json:"consumers"`
}

// ErrorBody is the body of every failed request.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail carries the contract's error code and a human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// HealthCheckRequest is the body of pharox.admin.health.check: either
// proxy_id, or pool_name with an optional limit (how many proxies the pool
// may have for this request); options replace the pool's when given.
type HealthCheckRequest struct {
	ProxyID  *string             `json:"proxy_id,omitempty"`
	PoolName *string             `json:"pool_name,omitempty"`
	Limit    *int                `json:"limit,omitempty"`
	Options  *HealthCheckOptions `json:"options,omitempty"`
}

// HealthLastRequest is the body of pharox.admin.health.last (v1.1).
type HealthLastRequest struct {
	ProxyID string `json:"proxy_id"`
}

// HealthLastReply is the reply of pharox.admin.health.last: the last result
// recorded for the proxy, or null.
type HealthLastReply struct {
	Result *HealthCheckResult `json:"result"`
}

// HealthCheckReply is the reply of pharox.admin.health.check.
type HealthCheckReply struct {
	Results []HealthCheckResult `json:"results"`
}
