package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/micro"

	"github.com/pharox/pharox-nats/model"
)

// errorCodes maps each sentinel to the contract's header code and error.code.
// It is the one place where errors become wire codes.
var errorCodes = []struct {
	err    error
	status int
	code   string
}{
	{model.ErrBadRequest, 400, "bad_request"},
	{model.ErrForbidden, 403, "forbidden"},
	{model.ErrPoolNotFound, 404, "pool_not_found"},
	{model.ErrLeaseNotFound, 404, "lease_not_found"},
	{model.ErrProxyNotFound, 404, "proxy_not_found"},
	{model.ErrLeaseNotActive, 409, "lease_not_active"},
	{model.ErrConflict, 409, "conflict"},
	{model.ErrPayloadTooLarge, 413, "payload_too_large"},
	{model.ErrUnavailable, 503, "unavailable"},
	{context.DeadlineExceeded, 503, "unavailable"},
}

// mapError returns the header status, the error code and the message for err.
// The message drops the sentinel's own text, which the code already says.
func mapError(err error) (int, string, string) {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.status, c.code, strings.TrimPrefix(err.Error(), c.err.Error()+": ")
		}
	}
	return 500, "internal", err.Error()
}

func errorBody(code, msg string) model.ErrorBody {
	return model.ErrorBody{Error: model.ErrorDetail{Code: code, Message: msg}}
}

func tooLarge(size, limit int) error {
	return fmt.Errorf("%w: request body of %d bytes is over the %d-byte limit", model.ErrPayloadTooLarge, size, limit)
}

// headerSafe keeps a message usable as a header value: one line, not empty.
func headerSafe(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, msg)
	if msg == "" {
		return "error"
	}
	return msg
}

// respondError sends the micro error headers with the error body. It goes
// through Respond rather than req.Error: replies are sent from a goroutine of
// their own after the micro handler has returned, and req.Error records the
// error in the request, which micro reads at that moment for its stats (a
// data race). The reply on the wire is the same.
func respondError(req micro.Request, status, msg string, body []byte) error {
	return req.Respond(body, micro.WithHeaders(micro.Headers{
		micro.ErrorCodeHeader: {status},
		micro.ErrorHeader:     {msg},
	}))
}
