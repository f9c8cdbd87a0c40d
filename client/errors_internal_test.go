package client

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

func errMsg(code, text string, body string) *nats.Msg {
	m := &nats.Msg{Subject: "pharox.x", Header: nats.Header{}, Data: []byte(body)}
	m.Header.Set("Nats-Service-Error-Code", code)
	m.Header.Set("Nats-Service-Error", text)
	return m
}

func TestReplyError(t *testing.T) {
	require.NoError(t, replyError(&nats.Msg{Data: []byte(`{"lease":null}`)}))

	err := replyError(errMsg("500", "boom", `{"error":{"code":"internal","message":"boom"}}`))
	require.ErrorIs(t, err, ErrInternal)
	require.Equal(t, "internal: boom", err.Error())

	// A body we cannot read: the header status and message decide.
	err = replyError(errMsg("503", "store down", `not json`))
	require.ErrorIs(t, err, model.ErrUnavailable)
	var e *Error
	require.True(t, errors.As(err, &e))
	require.Equal(t, 503, e.Status)
	require.Equal(t, "unavailable", e.Code)
	require.Equal(t, "store down", e.Message)

	// A code this client does not know falls back on the status.
	err = replyError(errMsg("409", "m", `{"error":{"code":"already_done","message":"m"}}`))
	require.ErrorIs(t, err, model.ErrConflict)
	require.Equal(t, "already_done", err.(*Error).Code)
	err = replyError(errMsg("418", "teapot", `{"error":{"code":"teapot","message":"short and stout"}}`))
	require.ErrorIs(t, err, ErrInternal)
	require.Contains(t, err.Error(), "short and stout")

	// Every code of the table reads back as the sentinel the broker
	// replied for, whatever the status says.
	for _, row := range model.ErrorCodes() {
		err := replyError(errMsg("400", "x", `{"error":{"code":"`+row.Code+`","message":"x"}}`))
		if row.Code == "unavailable" {
			require.ErrorIs(t, err, model.ErrUnavailable, row.Code)
			continue
		}
		require.ErrorIs(t, err, row.Err, row.Code)
	}
}
