package record

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReaderVarintIsBinaryVarint: reader.varint zigzag-decodes what
// reader.uvarint reads, and must read every signed varint, and fail on
// every truncated one, as binary.Varint does.
func TestReaderVarintIsBinaryVarint(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, -64, 64, -65, 1 << 40, -(1 << 40), math.MaxInt64, math.MinInt64} {
		data := binary.AppendVarint(nil, v)
		r := &reader{data: append(data, 0xAA)}
		require.Equal(t, v, r.varint())
		require.NoError(t, r.err)
		require.Equal(t, []byte{0xAA}, r.data, "reads exactly the varint's bytes")

		if len(data) > 1 {
			r = &reader{data: data[:len(data)-1]}
			require.Zero(t, r.varint())
			require.ErrorIs(t, r.err, errTruncated)
		}
	}
	// An overlong varint (more than 64 bits) is refused like a truncated one.
	r := &reader{data: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}}
	require.Zero(t, r.varint())
	require.ErrorIs(t, r.err, errTruncated)
}
