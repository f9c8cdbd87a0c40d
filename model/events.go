package model

import "time"

// Event names: the last token of the subject <prefix>.events.<name>.
const (
	EventAcquired      = "acquired"
	EventAcquireFailed = "acquire_failed"
	EventReleased      = "released"
	EventExpired       = "expired"
	EventRenewed       = "renewed"
	EventHealth        = "health"
	EventCooldown      = "cooldown"
)

// AcquireEvent is the payload of acquired and acquire_failed (lease null).
type AcquireEvent struct {
	Lease        *Lease             `json:"lease"`
	PoolName     string             `json:"pool_name"`
	ConsumerName string             `json:"consumer_name"`
	Filters      *ProxyFilters      `json:"filters"`
	Selector     Selector           `json:"selector"`
	StartedAt    time.Time          `json:"started_at"`
	CompletedAt  time.Time          `json:"completed_at"`
	DurationMs   float64            `json:"duration_ms"`
	PoolStats    *PoolStatsSnapshot `json:"pool_stats"`
}

// ReleaseEvent is the payload of released.
type ReleaseEvent struct {
	Lease           *Lease             `json:"lease"`
	PoolName        string             `json:"pool_name"`
	ReleasedAt      time.Time          `json:"released_at"`
	LeaseDurationMs float64            `json:"lease_duration_ms"`
	PoolStats       *PoolStatsSnapshot `json:"pool_stats"`
	// Outcome and Reason are the release's (v1.1), null when not given.
	Outcome *Outcome `json:"outcome"`
	Reason  *string  `json:"reason"`
}

// ExpiredEvent is the payload of expired.
type ExpiredEvent struct {
	Lease     *Lease             `json:"lease"`
	PoolName  string             `json:"pool_name"`
	ExpiredAt time.Time          `json:"expired_at"`
	PoolStats *PoolStatsSnapshot `json:"pool_stats"`
}

// RenewedEvent is the payload of renewed.
type RenewedEvent struct {
	Lease             *Lease    `json:"lease"`
	PoolName          string    `json:"pool_name"`
	PreviousExpiresAt time.Time `json:"previous_expires_at"`
}

// HealthEvent is the payload of health.
type HealthEvent struct {
	ProxyID        string            `json:"proxy_id"`
	PoolName       string            `json:"pool_name"`
	PreviousStatus ProxyStatus       `json:"previous_status"`
	Result         HealthCheckResult `json:"result"`
}

// CooldownEvent is the payload of cooldown (v1.1): a release reporting a
// failure set or moved the proxy's cooldown_until.
type CooldownEvent struct {
	ProxyID             string    `json:"proxy_id"`
	PoolName            string    `json:"pool_name"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	CooldownUntil       time.Time `json:"cooldown_until"`
	Reason              *string   `json:"reason"`
}
