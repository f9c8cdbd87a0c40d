package model

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every layer returns them inside an *Error built with
// Errorf (or, in older code, wrapped with %w); ErrorCodes maps them to the
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
	// ErrLimitReached is a request refused by a workers' limit on what one
	// consumer may hold (contract v1.1: 429); nothing changed.
	ErrLimitReached = errors.New("limit reached")
	// ErrUnavailable means the store did not answer in time; nothing changed.
	ErrUnavailable = errors.New("store unavailable")
	// ErrInternal is the contract's "internal" (500): no layer returns it on
	// purpose, it is what a client reads a 500, or a code it does not know,
	// as.
	ErrInternal = errors.New("internal error")
)

// ErrNoProxyAvailable is returned by WithLease when no eligible proxy was
// free; AcquireProxy reports the same case as a nil lease, like pharox's None.
var ErrNoProxyAvailable = errors.New("no proxy available")

// Error is a refusal of one of the contract's kinds: Kind is the sentinel
// (ErrPoolNotFound, ...), Message what the client is told in error.message.
// Keeping the two apart is what lets the reply carry the message without
// cutting the sentinel's words off a string.
type Error struct {
	Kind    error
	Message string
	// cause is the error the message's format wrapped with %w, if any, so
	// that errors.Is still finds it (context.DeadlineExceeded, ...).
	cause error
}

// Errorf returns an *Error of kind whose message is fmt.Sprintf(format,
// args...). A %w verb in format wraps its argument as fmt.Errorf does.
//
//	model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", name)
//
// is errors.Is(err, model.ErrPoolNotFound), prints as
// `pool not found: pool "x" does not exist` (the same text as
// fmt.Errorf("%w: pool %q does not exist", ...)) and replies 404
// pool_not_found with the message `pool "x" does not exist`.
func Errorf(kind error, format string, args ...any) error {
	wrapped := fmt.Errorf(format, args...)
	e := &Error{Kind: kind, Message: wrapped.Error()}
	switch wrapped.(type) {
	case interface{ Unwrap() error }, interface{ Unwrap() []error }:
		e.cause = wrapped
	}
	return e
}

// Error is the kind's text and the message, as fmt.Errorf("%w: %s") would
// print them, so that logs read the same whichever way an error was built.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Kind.Error()
	}
	return e.Kind.Error() + ": " + e.Message
}

// Unwrap returns the kind and, when the message wrapped one, its cause.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.cause}
}
