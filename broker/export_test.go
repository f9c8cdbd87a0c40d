package broker

import (
	"context"
	"time"
)

// WithExpiredDeadline gives every request a deadline that has already
// passed, so that every store call gives up before anything is sent: the
// way a test reaches 503 with nothing changed. Start refuses such a
// timeout from WithRequestTimeout.
func WithExpiredDeadline() Option {
	return func(o *options) {
		o.requestContext = func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Time{})
		}
	}
}
