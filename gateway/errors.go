package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// SOCKS5 reply codes (RFC 1928).
const (
	socksSucceeded          = 0x00
	socksGeneralFailure     = 0x01
	socksNotAllowed         = 0x02
	socksCommandUnsupported = 0x07
	socksAddressUnsupported = 0x08
)

// Error is a request the gateway refuses, as an HTTP status (and a SOCKS5
// reply code) with a code and a message for the body.
type Error struct {
	Status     int
	Code       string // the worker's error.code, or the gateway's own
	Message    string
	RetryAfter int // seconds; 0: no Retry-After
	socks      byte
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// write answers an HTTP client with e: the contract's error body.
func (e *Error) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.Status == http.StatusProxyAuthRequired {
		h.Set("Proxy-Authenticate", `Basic realm="pharox gateway"`)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	body, _ := json.Marshal(model.ErrorBody{Error: model.ErrorDetail{Code: e.Code, Message: e.Message}})
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(body, '\n'))
}

func (e *Error) socksCode() byte {
	if e.socks != 0 {
		return e.socks
	}
	return socksGeneralFailure
}

func errAuth(msg string) *Error {
	return &Error{Status: http.StatusProxyAuthRequired, Code: "proxy_auth_required", Message: msg}
}

func errBadRequest(code string, err error) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: err.Error()}
}

func errForbidden(err error) *Error {
	return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: err.Error(), socks: socksNotAllowed}
}

func errNoProxy(pool string, wait float64) *Error {
	msg := fmt.Sprintf("no eligible proxy of pool %q is free", pool)
	if wait > 0 {
		msg += fmt.Sprintf(" (waited %gs)", wait)
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: "no_proxy_available", Message: msg, RetryAfter: 1}
}

// fromWorker maps a failed worker call: the worker's 4xx is the client's
// bad request (unknown pool, bad filter), 429 stays 429, 503 is 503 with
// Retry-After, 500 and a worker that does not answer are 502.
func fromWorker(err error) *Error {
	if errors.Is(err, ErrNeedsV11) {
		return errBadRequest("needs_contract_v1_1", err)
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		e := &Error{Code: ce.Code, Message: ce.Message}
		switch {
		case ce.Status == http.StatusTooManyRequests:
			e.Status = http.StatusTooManyRequests
		case ce.Status == http.StatusServiceUnavailable:
			e.Status, e.RetryAfter = http.StatusServiceUnavailable, 1
		case ce.Status >= 400 && ce.Status < 500:
			e.Status = http.StatusBadRequest
		default:
			e.Status = http.StatusBadGateway
		}
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: http.StatusBadGateway, Code: "worker_timeout", Message: "no pharox worker answered in time: " + err.Error()}
	}
	return &Error{Status: http.StatusBadGateway, Code: "worker_unreachable", Message: err.Error()}
}

// errUpstream is the answer once every try of an upstream failed.
func errUpstream(tries int, last string) *Error {
	return &Error{Status: http.StatusBadGateway, Code: "upstream_failed",
		Message: fmt.Sprintf("%d upstream proxies tried, all failed; last: %s", tries, last)}
}

// errClient is a request that ended on the client's side (it went away,
// or its connection failed) before it had its answer.
func errClient(err error) *Error {
	return &Error{Status: 499, Code: "client_gone", Message: err.Error()}
}
