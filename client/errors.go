package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pharox/pharox-nats/model"
)

// The contract's errors, as the model package declares them, for callers
// that only import client. errors.Is(err, client.ErrPoolNotFound) and
// errors.Is(err, model.ErrPoolNotFound) are the same test.
var (
	ErrBadRequest       = model.ErrBadRequest
	ErrForbidden        = model.ErrForbidden
	ErrPoolNotFound     = model.ErrPoolNotFound
	ErrLeaseNotFound    = model.ErrLeaseNotFound
	ErrProxyNotFound    = model.ErrProxyNotFound
	ErrConflict         = model.ErrConflict
	ErrLeaseNotActive   = model.ErrLeaseNotActive
	ErrPayloadTooLarge  = model.ErrPayloadTooLarge
	ErrLimitReached     = model.ErrLimitReached
	ErrUnavailable      = model.ErrUnavailable
	ErrNoProxyAvailable = model.ErrNoProxyAvailable
)

// ErrInternal is what an *Error with code "internal" (500), or a code this
// client does not know, unwraps to.
var ErrInternal = model.ErrInternal

// Error is a request the worker refused: the Nats-Service-Error-Code header
// (Status) and the {"error": {"code", "message"}} body. It unwraps to the
// sentinel of its code, so errors.Is(err, model.ErrPoolNotFound) works.
type Error struct {
	Status  int    // header Nats-Service-Error-Code: 400, 403, 404, 409, 413, 429, 503 or 500
	Code    string // error.code: bad_request, pool_not_found, ...
	Message string // error.message, the worker's words
	Subject string // the subject the request was sent to
}

// Error returns the code and the worker's message, e.g.
// `pool_not_found: pool "latam" does not exist`.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the sentinel of e's code as model.ErrorCodes gives it
// (ErrInternal for internal, or for an unknown code whose status says
// nothing more).
func (e *Error) Unwrap() error { return model.ErrFromCode(e.Code, e.Status) }

// Is reports whether target is e's sentinel, or an *Error with the same code.
func (e *Error) Is(target error) bool {
	if t, ok := target.(*Error); ok {
		return t.Code == e.Code
	}
	return target == e.Unwrap()
}

// replyError returns the *Error a reply carries, or nil for a success.
func replyError(msg *nats.Msg) error {
	codeHdr := msg.Header.Get(micro.ErrorCodeHeader)
	if codeHdr == "" {
		return nil
	}
	e := &Error{Subject: msg.Subject, Code: "internal", Message: msg.Header.Get(micro.ErrorHeader)}
	if n, err := strconv.Atoi(codeHdr); err == nil {
		e.Status = n
	}
	var body model.ErrorBody
	if err := json.Unmarshal(msg.Data, &body); err == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else if code, ok := model.CodeOfStatus(e.Status); ok {
		// No body we can read: the header status still names the kind.
		e.Code = code
	}
	return e
}

// transportError words a failed round trip. No responders means no worker
// serves the subject: that is model.ErrUnavailable (nothing was changed).
func transportError(subject string, err error) error {
	if errors.Is(err, nats.ErrNoResponders) {
		return model.Errorf(model.ErrUnavailable, "no pharox worker answers %s: %w", subject, err)
	}
	return fmt.Errorf("pharox request %s: %w", subject, err)
}
