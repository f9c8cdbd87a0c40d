package model

import (
	"context"
	"errors"
)

// ErrorCode is one row of the table between errors and the contract's error
// replies: the Nats-Service-Error-Code header (Status) and error.code (Code).
type ErrorCode struct {
	Err    error
	Status int
	Code   string
	// Generic marks the row a status alone stands for, when a reader meets
	// an error.code it does not know (404 has none: three codes share it).
	Generic bool
}

// ErrorCodes is the one table of error codes: the broker replies with it,
// the client reads replies with it. When an error matches several rows
// (it wraps two sentinels), the first row wins.
func ErrorCodes() []ErrorCode {
	return []ErrorCode{
		{Err: ErrBadRequest, Status: 400, Code: "bad_request", Generic: true},
		{Err: ErrForbidden, Status: 403, Code: "forbidden", Generic: true},
		{Err: ErrPoolNotFound, Status: 404, Code: "pool_not_found"},
		{Err: ErrLeaseNotFound, Status: 404, Code: "lease_not_found"},
		{Err: ErrProxyNotFound, Status: 404, Code: "proxy_not_found"},
		{Err: ErrLeaseNotActive, Status: 409, Code: "lease_not_active"},
		{Err: ErrConflict, Status: 409, Code: "conflict", Generic: true},
		{Err: ErrPayloadTooLarge, Status: 413, Code: "payload_too_large", Generic: true},
		{Err: ErrLimitReached, Status: 429, Code: "limit_reached", Generic: true},
		{Err: ErrUnavailable, Status: 503, Code: "unavailable", Generic: true},
		// A deadline that passed before the store answered: nothing changed.
		{Err: context.DeadlineExceeded, Status: 503, Code: "unavailable"},
		{Err: ErrInternal, Status: 500, Code: "internal", Generic: true},
	}
}

// Reply returns what a reply to err says: the status, error.code and
// error.message. An error of no row is 500 "internal" with err's text.
//
// The outermost *Error in err's chain decides when its kind has a row (so
// Errorf(ErrUnavailable, "...: %w", conflictErr) is 503, not 409), and its
// Message is the message. An error that wraps a row's sentinel (or
// context.DeadlineExceeded) without an *Error says its whole text.
func Reply(err error) (status int, code, message string) {
	var e *Error
	if errors.As(err, &e) {
		if row, ok := rowOf(e.Kind); ok {
			return row.Status, row.Code, e.Message
		}
	}
	for _, row := range ErrorCodes() {
		if errors.Is(err, row.Err) {
			return row.Status, row.Code, err.Error()
		}
	}
	return 500, "internal", err.Error()
}

// Code returns the status and error.code of err (see Reply).
func Code(err error) (status int, code string) {
	status, code, _ = Reply(err)
	return status, code
}

// ErrFromCode is the sentinel a reply's error.code stands for; a code not in
// the table falls back on the Generic row of its status, and else on
// ErrInternal.
func ErrFromCode(code string, status int) error {
	rows := ErrorCodes()
	for _, row := range rows {
		if row.Code == code {
			return row.Err
		}
	}
	if c, ok := CodeOfStatus(status); ok {
		for _, row := range rows {
			if row.Code == c {
				return row.Err
			}
		}
	}
	return ErrInternal
}

// CodeOfStatus is the error.code a status alone stands for (the Generic
// row), for a reply whose body cannot be read.
func CodeOfStatus(status int) (string, bool) {
	for _, row := range ErrorCodes() {
		if row.Generic && row.Status == status {
			return row.Code, true
		}
	}
	return "", false
}

func rowOf(kind error) (ErrorCode, bool) {
	for _, row := range ErrorCodes() {
		if row.Err == kind {
			return row, true
		}
	}
	return ErrorCode{}, false
}
