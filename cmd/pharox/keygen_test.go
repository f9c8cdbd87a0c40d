package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/credkey"
)

// TestKeygen prints a new key each time, in the form the workers' key
// file and PHAROX_CREDENTIALS_KEY take, without connecting to anything.
func TestKeygen(t *testing.T) {
	gen := func() string {
		var out, errOut bytes.Buffer
		code := execute(context.Background(), []string{"keygen", "--nats-url", "nats://127.0.0.1:1"}, nil, &out, &errOut, nil)
		require.Equal(t, exitOK, code, errOut.String())
		require.Empty(t, errOut.String())
		return out.String()
	}
	a, b := gen(), gen()
	require.NotEqual(t, a, b)
	require.True(t, strings.HasSuffix(a, "\n"))
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a))
	require.NoError(t, err)
	require.Len(t, raw, credkey.KeySize)
	_, err = credkey.ParseList(a+b, "keygen output")
	require.NoError(t, err, "two keygen lines make a key file")
}
