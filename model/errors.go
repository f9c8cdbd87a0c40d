package model

import "errors"

// Sentinel errors. Every layer wraps them with %w; the broker maps them to the
// contract's error codes in one place.
var (
	ErrBadRequest      = errors.New("bad request")
	ErrForbidden       = errors.New("forbidden")
	ErrPoolNotFound    = errors.New("pool not found")
	ErrLeaseNotFound   = errors.New("lease not found")
	ErrProxyNotFound   = errors.New("proxy not found")
	ErrConflict        = errors.New("conflict")
	ErrLeaseNotActive  = errors.New("lease not active")
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrUnavailable means the store did not answer in time; nothing changed.
	ErrUnavailable = errors.New("store unavailable")
)

// ErrNoProxyAvailable is returned by WithLease when no eligible proxy was
// free; AcquireProxy reports the same case as a nil lease, like pharox's None.
var ErrNoProxyAvailable = errors.New("no proxy available")
