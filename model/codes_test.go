package model_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

func TestErrorfCarriesKindAndMessage(t *testing.T) {
	err := model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", "latam")
	require.ErrorIs(t, err, model.ErrPoolNotFound)
	require.NotErrorIs(t, err, model.ErrProxyNotFound)
	// The same text as the %w form, so logs read the same.
	require.Equal(t, fmt.Errorf("%w: pool %q does not exist", model.ErrPoolNotFound, "latam").Error(), err.Error())
	var e *model.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, `pool "latam" does not exist`, e.Message)

	// A %w in the message keeps its cause findable.
	err = model.Errorf(model.ErrUnavailable, "stream %s: %w", "S", context.DeadlineExceeded)
	require.ErrorIs(t, err, model.ErrUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, "store unavailable: stream S: context deadline exceeded", err.Error())
}

func TestReply(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		status  int
		code    string
		message string
	}{
		{"errorf", model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", "x"), 404, "pool_not_found", `pool "x" does not exist`},
		{"errorf wrapped in context", fmt.Errorf("seed: %w", model.Errorf(model.ErrBadRequest, "port must be in 1..65535, got 0")), 400, "bad_request", "port must be in 1..65535, got 0"},
		// The message is exactly what was given, even when it starts with
		// the sentinel's own words.
		{"message repeats the kind", model.Errorf(model.ErrConflict, "conflict: pool has leases"), 409, "conflict", "conflict: pool has leases"},
		// The outermost *Error decides, not the table order (conflict
		// comes before unavailable there).
		{"outermost kind wins", model.Errorf(model.ErrUnavailable, "gave up: %w", model.Errorf(model.ErrConflict, "revision moved")), 503, "unavailable", "gave up: conflict: revision moved"},
		{"lease not active before conflict", model.Errorf(model.ErrLeaseNotActive, "lease %s is released", "l"), 409, "lease_not_active", "lease l is released"},
		// A sentinel wrapped without Errorf: nothing is cut off its text.
		{"bare sentinel", model.ErrProxyNotFound, 404, "proxy_not_found", "proxy not found"},
		{"sentinel wrapped with %w", fmt.Errorf("%w: proxy %q does not exist", model.ErrProxyNotFound, "p"), 404, "proxy_not_found", `proxy not found: proxy "p" does not exist`},
		{"deadline", fmt.Errorf("get pool: %w", context.DeadlineExceeded), 503, "unavailable", "get pool: context deadline exceeded"},
		{"payload", model.Errorf(model.ErrPayloadTooLarge, "request body of 9 bytes is over the 8-byte limit"), 413, "payload_too_large", "request body of 9 bytes is over the 8-byte limit"},
		{"forbidden", model.Errorf(model.ErrForbidden, "consumer_name does not hold lease l"), 403, "forbidden", "consumer_name does not hold lease l"},
		{"unknown", errors.New("disk on fire"), 500, "internal", "disk on fire"},
		// An *Error of a kind without a row falls back on the table.
		{"kind without a row", model.Errorf(model.ErrNoProxyAvailable, "in pool %q", "p"), 500, "internal", `no proxy available: in pool "p"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, message := model.Reply(tc.err)
			require.Equal(t, tc.status, status)
			require.Equal(t, tc.code, code)
			require.Equal(t, tc.message, message)
			s, c := model.Code(tc.err)
			require.Equal(t, tc.status, s)
			require.Equal(t, tc.code, c)
		})
	}
}

// TestErrorCodesRoundTrip: what the broker replies for a sentinel, the
// client reads back as the same sentinel.
func TestErrorCodesRoundTrip(t *testing.T) {
	seen := map[error]bool{}
	for _, row := range model.ErrorCodes() {
		require.False(t, seen[row.Err], "one row per error")
		seen[row.Err] = true
		status, code, _ := model.Reply(model.Errorf(row.Err, "m"))
		require.Equal(t, row.Status, status, row.Code)
		require.Equal(t, row.Code, code)
		back := model.ErrFromCode(code, status)
		if row.Err == context.DeadlineExceeded {
			// Two errors reply "unavailable"; it reads back as the sentinel.
			require.Equal(t, model.ErrUnavailable, back)
			continue
		}
		require.Equal(t, row.Err, back, row.Code)
	}
	for _, sentinel := range []error{model.ErrBadRequest, model.ErrForbidden, model.ErrPoolNotFound, model.ErrLeaseNotFound,
		model.ErrProxyNotFound, model.ErrConflict, model.ErrLeaseNotActive, model.ErrPayloadTooLarge, model.ErrUnavailable, model.ErrInternal} {
		require.True(t, seen[sentinel], "%v has a row", sentinel)
	}
}

func TestErrFromUnknownCode(t *testing.T) {
	// A code the reader does not know: its status decides where one code
	// stands for it, else internal.
	require.Equal(t, model.ErrConflict, model.ErrFromCode("already_done", 409))
	require.Equal(t, model.ErrBadRequest, model.ErrFromCode("too_fancy", 400))
	require.Equal(t, model.ErrUnavailable, model.ErrFromCode("later", 503))
	require.Equal(t, model.ErrInternal, model.ErrFromCode("gone", 404), "404 has three codes: no guess")
	require.Equal(t, model.ErrInternal, model.ErrFromCode("teapot", 418))
	require.Equal(t, model.ErrInternal, model.ErrFromCode("internal", 409))

	code, ok := model.CodeOfStatus(413)
	require.True(t, ok)
	require.Equal(t, "payload_too_large", code)
	_, ok = model.CodeOfStatus(404)
	require.False(t, ok)
}
