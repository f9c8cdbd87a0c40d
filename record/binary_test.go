package record_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// full is a proxy record with every optional field set and two holders.
func full() *record.Proxy {
	s := func(v string) *string { return &v }
	f := func(v float64) *float64 { return &v }
	at := time.Date(2026, 12, 5, 11, 30, 0, 123456789, time.UTC)
	checked, cooldown := at.Add(-time.Minute), at.Add(time.Hour)
	asn, limit, code := int64(64512), 3, 502
	return &record.Proxy{ID: "6f1f0c9e-8b11-4b43-9d7e-a7f1c2d08c1e", PoolID: "pool-id", PoolName: "scrapers", Seq: 1 << 40,
		Host: "2001:db8::1", Port: 65535, Protocol: model.ProtocolSOCKS5, Status: model.ProxyActive, CheckedAt: &checked,
		Credentials: &model.Credentials{User: "bot", Password: password},
		Source:      s("vendor-a"), Country: s("AR"), City: s("Córdoba"), Latitude: f(-31.42), Longitude: f(-64.18),
		ISP: s("isp"), ASN: &asn, MaxConcurrency: &limit,
		Holders: []record.Holder{
			{LeaseID: "l1", ConsumerID: "c1", ConsumerName: "crawler", AcquiredAt: at, ExpiresAt: at.Add(time.Minute), Token: 41},
			{LeaseID: "l2", ConsumerID: "c2", ConsumerName: "crawler-2", AcquiredAt: at, ExpiresAt: at.Add(time.Second)},
		},
		Health: &record.Health{Status: model.ProxyActive, LatencyMs: 12.5, Protocol: model.ProtocolHTTP, Attempts: 2,
			StatusCode: &code, CheckedAt: checked, ErrorMessage: s("bad gateway")},
		ConsecutiveFailures: 2, CooldownUntil: &cooldown}
}

// requireSame compares two records field by field through their exported
// fields (the codec's sealing state aside, which the credentials tests
// check).
func requireSame(t *testing.T, want, got *record.Proxy) {
	t.Helper()
	w, g := *want, *got
	w.ReplaceCredentials(want.Credentials)
	g.ReplaceCredentials(got.Credentials)
	if len(w.Holders) == 0 && len(g.Holders) == 0 {
		w.Holders, g.Holders = nil, nil
	}
	require.Equal(t, w, g)
}

func TestBinaryRoundTrip(t *testing.T) {
	minimal := &record.Proxy{ID: "p", PoolID: "pool-id", PoolName: "p", Seq: 1, Host: "h", Port: 1,
		Protocol: model.ProtocolHTTP, Status: model.ProxyInactive}
	for name, rec := range map[string]*record.Proxy{"full": full(), "minimal": minimal, "bench": proxy()} {
		t.Run(name, func(t *testing.T) {
			c := record.NewCodec(nil)
			data := c.Encode(rec.Clone())
			require.Equal(t, byte(1), data[0], "written in layout 1")
			back, err := c.Decode(data)
			require.NoError(t, err)
			requireSame(t, rec, back)

			// With a key the credentials come back too, sealed in between.
			k := ring(t, key(t))
			back, err = record.NewCodec(k).Decode(record.NewCodec(k).Encode(rec.Clone()))
			require.NoError(t, err)
			requireSame(t, rec, back)
		})
	}
}

// TestJSONRecordsMigrate: a record written as JSON before the binary
// layout (with its credentials in clear or sealed) reads as it was, and is
// stored in the binary layout by the next write.
func TestJSONRecordsMigrate(t *testing.T) {
	k := ring(t, key(t))
	for name, c := range map[string]*record.Codec{"in clear": record.NewCodec(nil), "sealed": record.NewCodec(k)} {
		t.Run(name, func(t *testing.T) {
			old := c.EncodeJSON(full())
			require.Equal(t, byte('{'), old[0])
			rec, err := c.Decode(old)
			require.NoError(t, err)
			requireSame(t, full(), rec)
			require.True(t, c.Current(rec), "how credentials are kept is not the layout")

			next := rec.Clone()
			next.Holders = next.Holders[:1]
			data := c.Encode(next)
			require.Equal(t, byte(1), data[0], "the next write is binary")
			back, err := c.Decode(data)
			require.NoError(t, err)
			want := full()
			want.Holders = want.Holders[:1]
			requireSame(t, want, back)
		})
	}
}

// A damaged record is an error, never a panic or a record with fields
// missing: every cut of a full record, and an unknown layout or field.
func TestBinaryDamage(t *testing.T) {
	c := record.NewCodec(nil)
	data := c.Encode(full())
	for n := 1; n < len(data); n++ {
		_, err := c.Decode(data[:n])
		require.Error(t, err, "cut at %d of %d", n, len(data))
	}
	_, err := c.Decode(append(append([]byte{}, data...), 0))
	require.Error(t, err, "a byte too many")
	_, err = c.Decode(append([]byte{2}, data[1:]...))
	require.ErrorContains(t, err, "unknown layout")
	_, err = c.Decode(append([]byte{1, 0x80, 0x80, 0x01}, data[2:]...))
	require.ErrorContains(t, err, "unknown here")
}

// Records decoded by one codec share the values they repeat, and only
// those.
func TestDecodeSharesRepeatedValues(t *testing.T) {
	c := record.NewCodec(nil)
	a, err := c.Decode(c.Encode(full()))
	require.NoError(t, err)
	b, err := c.Decode(c.Encode(full()))
	require.NoError(t, err)
	require.Same(t, a.Country, b.Country)
	require.Same(t, a.ISP, b.ISP)
	require.Equal(t, a.ID, b.ID)
	require.NotSame(t, a.Credentials, b.Credentials)
}

// go test -run - -bench Codec -benchmem ./record
func BenchmarkCodec(b *testing.B) {
	c := record.NewCodec(nil)
	rec := proxy()
	bin, js := c.Encode(rec.Clone()), c.EncodeJSON(rec.Clone())
	b.Run("decode/json", func(b *testing.B) {
		b.SetBytes(int64(len(js)))
		for b.Loop() {
			if _, err := c.Decode(js); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/binary", func(b *testing.B) {
		b.SetBytes(int64(len(bin)))
		for b.Loop() {
			if _, err := c.Decode(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/json", func(b *testing.B) {
		for b.Loop() {
			c.EncodeJSON(rec)
		}
	})
	b.Run("encode/binary", func(b *testing.B) {
		for b.Loop() {
			c.Encode(rec)
		}
	})
}
