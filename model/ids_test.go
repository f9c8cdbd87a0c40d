package model_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

func TestValidID(t *testing.T) {
	id := uuid.NewString()
	require.True(t, model.ValidID(id))
	require.True(t, model.ValidID("00000000-0000-0000-0000-000000000000"))
	// Spellings of the same UUID that uuid.Parse takes, but that are not
	// the canonical string the workers issue: they name nothing.
	for _, other := range []string{
		strings.ToUpper(id),
		"{" + id + "}",
		"urn:uuid:" + id,
		strings.ReplaceAll(id, "-", ""),
		id[:35],
		id + "0",
		"",
		"not-a-uuid",
		"g" + id[1:],
	} {
		require.False(t, model.ValidID(other), other)
	}
}

func TestCheckPrefix(t *testing.T) {
	for _, ok := range []string{"pharox", "px", "team-a.pharox", "a_b"} {
		require.NoError(t, model.CheckPrefix(ok), ok)
	}
	for _, bad := range []string{"", "a b", "a*", ">", "a.>", ".a", "a.", "a..b", "a\tb"} {
		require.Error(t, model.CheckPrefix(bad), bad)
	}
}
