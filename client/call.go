package client

import (
	"context"
	"time"
)

// Call sends req (any value that encodes to the request's JSON) to
// <prefix>.<op> and decodes the reply into out (nil: the reply is dropped),
// with the client's timeout plus extra (an acquire's wait_seconds) and the
// same *Error for a refused request as the typed methods.
//
// It is for bodies the typed methods cannot carry yet, such as the fields
// of a newer contract version than the model package has.
func (c *Client) Call(ctx context.Context, op string, req, out any, extra time.Duration) error {
	return c.callWait(ctx, op, req, out, extra)
}
