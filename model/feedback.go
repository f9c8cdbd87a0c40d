package model

import (
	"errors"
	"time"
	"unicode/utf8"
)

// Bounds of the v1.1 feedback fields.
const (
	// MaxReasonLen bounds a release's reason, in Unicode code points.
	MaxReasonLen = 1024
	// MaxExcludeProxyIDs bounds an acquire's exclude_proxy_ids.
	MaxExcludeProxyIDs = 100
	// maxCooldownSeconds is the longest cooldown a time.Duration holds;
	// longer settings saturate there (about 292 years).
	maxCooldownSeconds = int64(1<<63-1) / int64(time.Second)
)

// Outcome is what a consumer reports about a proxy when it releases it.
type Outcome string

const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// Valid reports whether o is one of the contract's outcomes.
func (o Outcome) Valid() bool { return o == OutcomeSuccess || o == OutcomeFailure }

// Cooldown is a pool's cooldown setting: a proxy whose consecutive failures
// reach Failures is not leased for Seconds, doubling with every further
// failure, up to MaxSeconds.
type Cooldown struct {
	Failures   int `json:"failures"`
	Seconds    int `json:"seconds"`
	MaxSeconds int `json:"max_seconds"`
}

// Validate checks the bounds of the contract: failures >= 1, seconds >= 1,
// max_seconds >= seconds. field prefixes the names in messages.
func (c *Cooldown) Validate(field string) error {
	switch {
	case c == nil:
		return nil
	case c.Failures < 1:
		return Errorf(ErrBadRequest, "%s.failures must be an integer >= 1, got %d", field, c.Failures)
	case c.Seconds < 1:
		return Errorf(ErrBadRequest, "%s.seconds must be an integer >= 1, got %d", field, c.Seconds)
	case c.MaxSeconds < c.Seconds:
		return Errorf(ErrBadRequest, "%s.max_seconds must be >= seconds (%d), got %d", field, c.Seconds, c.MaxSeconds)
	}
	return nil
}

// Backoff is how long a proxy cools down once its consecutive failures
// reach n: 0 below Failures, else min(Seconds x 2^(n - Failures),
// MaxSeconds) seconds.
func (c *Cooldown) Backoff(n int) time.Duration {
	if c == nil || n < c.Failures {
		return 0
	}
	secs, limit := int64(c.Seconds), min(int64(c.MaxSeconds), maxCooldownSeconds)
	for k := n - c.Failures; k > 0 && secs < limit; k-- {
		secs *= 2
	}
	return time.Duration(min(secs, limit)) * time.Second
}

// CutReason shortens s to at most MaxReasonLen code points, the longest
// reason a release may carry.
func CutReason(s string) string {
	if utf8.RuneCountInString(s) <= MaxReasonLen {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxReasonLen {
			return s[:i]
		}
		n++
	}
	return s
}

// ReleaseSuccess is a release of leaseID reporting that the proxy worked.
func ReleaseSuccess(leaseID string) ReleaseRequest {
	o := OutcomeSuccess
	return ReleaseRequest{LeaseID: leaseID, Outcome: &o}
}

// ReleaseFailure is a release of leaseID reporting that the proxy failed,
// with reason (cut to MaxReasonLen code points; "" sends none).
func ReleaseFailure(leaseID, reason string) ReleaseRequest {
	o := OutcomeFailure
	req := ReleaseRequest{LeaseID: leaseID, Outcome: &o}
	if reason != "" {
		r := CutReason(reason)
		req.Reason = &r
	}
	return req
}

// notProxyFault marks an error as not the proxy's doing.
type notProxyFault struct{ err error }

func (e notProxyFault) Error() string { return e.err.Error() }
func (e notProxyFault) Unwrap() error { return e.err }

// NotProxyFault marks err as not the proxy's fault (a bug, a bad input, a
// target that is down for everyone): WithLease then releases the lease
// without reporting a failure. The error is returned as it is otherwise
// (errors.Is and errors.As see through the mark). nil stays nil.
func NotProxyFault(err error) error {
	if err == nil {
		return nil
	}
	return notProxyFault{err}
}

// IsNotProxyFault reports whether err, or an error it wraps, was marked by
// NotProxyFault.
func IsNotProxyFault(err error) bool {
	var m notProxyFault
	return errors.As(err, &m)
}

// OutcomeOf is the release a WithLease reports for the error its function
// returned: success for nil, failure with the error's text (cut to
// MaxReasonLen code points) as reason, or none (nil) for an error marked
// by NotProxyFault.
func OutcomeOf(err error) (*Outcome, *string) {
	if err == nil {
		o := OutcomeSuccess
		return &o, nil
	}
	if IsNotProxyFault(err) {
		return nil, nil
	}
	o, r := OutcomeFailure, CutReason(err.Error())
	return &o, &r
}
