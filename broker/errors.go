package broker

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pharox/pharox-nats/model"
)

// The table of error codes is model.ErrorCodes; model.Reply turns an error
// into its status, code and message.

func errorBody(code, msg string) model.ErrorBody {
	return model.ErrorBody{Error: model.ErrorDetail{Code: code, Message: msg}}
}

// errorHeader is micro's error headers, as micro's Request.Error sets them.
func errorHeader(status int, msg string) nats.Header {
	return nats.Header{
		micro.ErrorCodeHeader: {strconv.Itoa(status)},
		micro.ErrorHeader:     {msg},
	}
}

func tooLarge(size, limit int) error {
	return model.Errorf(model.ErrPayloadTooLarge, "request body of %d bytes is over the %d-byte limit", size, limit)
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
