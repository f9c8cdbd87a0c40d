package record_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

const password = "pw-Kq83zv"

func ring(t testing.TB, keys ...string) *credkey.Ring {
	t.Helper()
	list := ""
	for _, k := range keys {
		list += k + ","
	}
	r, err := credkey.ParseList(list, "test")
	require.NoError(t, err)
	return r
}

func key(t testing.TB) string {
	t.Helper()
	k, err := credkey.Generate()
	require.NoError(t, err)
	return k
}

func proxy() *record.Proxy {
	country := "AR"
	return &record.Proxy{ID: "6f1f0c9e-8b11-4b43-9d7e-a7f1c2d08c1e", PoolID: "pool-id", PoolName: "scrapers", Seq: 7,
		Host: "203.0.113.10", Port: 1080, Protocol: model.ProtocolSOCKS5, Status: model.ProxyActive, Country: &country,
		Credentials: &model.Credentials{User: "bot", Password: password}, Holders: []record.Holder{}}
}

// stored is how data keeps its credentials: in clear, or sealed.
func stored(t testing.TB, data []byte) (*model.Credentials, string) {
	t.Helper()
	creds, sealed, err := record.Stored(data)
	require.NoError(t, err)
	return creds, sealed
}

func TestCodecSealsCredentials(t *testing.T) {
	k := ring(t, key(t))
	c := record.NewCodec(k)
	data := c.Encode(proxy())
	require.NotContains(t, string(data), password)
	require.NotContains(t, string(data), `"bot"`)
	creds, sealed := stored(t, data)
	require.Nil(t, creds)
	require.True(t, strings.HasPrefix(sealed, `pxc1.`+k.Primary()+`.`), sealed)
	require.Contains(t, string(data), "203.0.113.10", "only the credentials are sealed")

	back, err := c.Decode(data)
	require.NoError(t, err)
	require.False(t, back.CredentialsUnreadable())
	require.Equal(t, &model.Credentials{User: "bot", Password: password}, back.Credentials)
	require.Equal(t, k.Primary(), back.CredentialsKeyID())
	require.True(t, c.Current(back))
	require.Contains(t, back.Model(time.Now()).URL, password, "replies carry them decrypted")

	// Without a key: in clear, as before.
	clear := record.Encode(proxy())
	require.Contains(t, string(clear), password)
	creds, sealed = stored(t, clear)
	require.Equal(t, password, creds.Password)
	require.Empty(t, sealed)
	back, err = c.Decode(clear)
	require.NoError(t, err)
	require.Equal(t, password, back.Credentials.Password)
	require.Empty(t, back.CredentialsKeyID())
	require.False(t, c.Current(back), "a record in clear is not current for a codec with a key")
	require.True(t, (&record.Codec{}).Current(back))

	// A proxy without credentials is current for any codec.
	none := proxy()
	none.Credentials = nil
	back, err = c.Decode(c.Encode(none))
	require.NoError(t, err)
	require.Nil(t, back.Credentials)
	require.True(t, c.Current(back))
}

// TestUnreadableCredentialsSurviveWrites: a worker without the key (or
// with a wrong one) reads the record with no credentials and says so, and
// its own writes of it (a release, an expiry) carry the sealed value on
// unchanged, so a worker with the key still reads them afterwards.
func TestUnreadableCredentialsSurviveWrites(t *testing.T) {
	k := ring(t, key(t))
	sealed := record.NewCodec(k).Encode(proxy())
	for name, other := range map[string]*record.Codec{"no key": record.NewCodec(nil), "a wrong key": record.NewCodec(ring(t, key(t)))} {
		t.Run(name, func(t *testing.T) {
			rec, err := other.Decode(sealed)
			require.NoError(t, err)
			require.True(t, rec.CredentialsUnreadable())
			require.Nil(t, rec.Credentials)
			require.Equal(t, k.Primary(), rec.CredentialsKeyID())
			require.False(t, other.Current(rec))

			next := rec.Clone()
			next.Holders = append(next.Holders, record.Holder{LeaseID: "l1", ConsumerName: "c"})
			again := other.Encode(next)
			_, was := stored(t, sealed)
			_, now := stored(t, again)
			require.Equal(t, was, now)
			back, err := record.NewCodec(k).Decode(again)
			require.NoError(t, err)
			require.Equal(t, password, back.Credentials.Password)
			require.Len(t, back.Holders, 1)

			// Credentials replaced there are the new ones.
			next = rec.Clone()
			next.ReplaceCredentials(&model.Credentials{User: "new", Password: "fresh"})
			require.False(t, next.CredentialsUnreadable())
			back, err = other.Decode(other.Encode(next))
			require.NoError(t, err)
			require.Equal(t, "fresh", back.Credentials.Password)
			next = rec.Clone()
			next.ReplaceCredentials(nil)
			back, err = record.NewCodec(k).Decode(other.Encode(next))
			require.NoError(t, err)
			require.Nil(t, back.Credentials, "cleared")
		})
	}
}

// TestCodecRotation: a ring with a new first key reads what the old key
// sealed, finds it not current, and seals it with the new key when it
// writes it.
func TestCodecRotation(t *testing.T) {
	oldKey, newKey := key(t), key(t)
	old, rotated := ring(t, oldKey), ring(t, newKey, oldKey)
	c := record.NewCodec(rotated)
	rec, err := c.Decode(record.NewCodec(old).Encode(proxy()))
	require.NoError(t, err)
	require.Equal(t, old.Primary(), rec.CredentialsKeyID())
	require.False(t, c.Current(rec))
	next := rec.Clone()
	data := c.Encode(next)
	require.True(t, c.Current(next), "Encode records how the writer's copy is now stored")
	require.Equal(t, rotated.Primary(), next.CredentialsKeyID())
	back, err := record.NewCodec(ring(t, newKey)).Decode(data)
	require.NoError(t, err)
	require.Equal(t, password, back.Credentials.Password)
	_, err = record.NewCodec(old).Decode(data)
	require.NoError(t, err)

	// The sealed value is bound to its proxy: copied into another record
	// it does not open.
	_, blob := stored(t, data)
	other := proxy()
	other.ID = "00000000-0000-4000-8000-000000000000"
	other.ReplaceCredentials(nil)
	quoted, _ := json.Marshal(blob)
	forged := bytes.Replace((&record.Codec{}).EncodeJSON(other), []byte(`"credentials":null`),
		[]byte(`"credentials":null,"sealed_credentials":`+string(quoted)), 1)
	got, err := c.Decode(forged)
	require.NoError(t, err)
	require.True(t, got.CredentialsUnreadable())
}

// The two ways to keep what an acquire reply needs, measured: decrypt
// once when a version is installed and hold the credentials in clear
// (what the replica does), or hold the sealed value and decrypt per reply.
// go test -run - -bench Credentials -benchmem ./record
func BenchmarkCredentials(b *testing.B) {
	k := ring(b, key(b))
	sealedCodec, clearCodec := record.NewCodec(k), record.NewCodec(nil)
	rec := proxy()
	sealed, clear := sealedCodec.Encode(rec.Clone()), clearCodec.Encode(rec.Clone())
	installed, _ := sealedCodec.Decode(sealed)
	_, blob := stored(b, sealed)
	now := time.Now()

	b.Run("write/clear", func(b *testing.B) {
		for b.Loop() {
			clearCodec.Encode(rec.Clone())
		}
	})
	b.Run("write/sealed", func(b *testing.B) {
		for b.Loop() {
			sealedCodec.Encode(rec.Clone())
		}
	})
	b.Run("install/clear", func(b *testing.B) {
		for b.Loop() {
			_, _ = clearCodec.Decode(clear)
		}
	})
	b.Run("install/sealed", func(b *testing.B) {
		for b.Loop() {
			_, _ = sealedCodec.Decode(sealed)
		}
	})
	b.Run("reply/decrypted-at-install", func(b *testing.B) {
		for b.Loop() {
			_ = installed.Model(now)
		}
	})
	b.Run("reply/decrypt-per-reply", func(b *testing.B) {
		r := installed.Clone()
		for b.Loop() {
			plain, err := k.Open(blob, []byte("pharox proxy credentials\x00"+r.ID))
			if err != nil {
				b.Fatal(err)
			}
			var c model.Credentials
			_ = json.Unmarshal(plain, &c)
			r.Credentials = &c
			_ = r.Model(now)
		}
	})
	// Memory held per proxy by each way, beyond the record itself: one
	// measurement of n proxies, whatever b.N.
	const n = 100000
	held := func(b *testing.B, keep func(i int) any) {
		out := make([]any, n)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := range out {
			out[i] = keep(i)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "B/proxy")
		runtime.KeepAlive(out)
	}
	b.Run("held/in-clear", func(b *testing.B) {
		held(b, func(i int) any {
			var c model.Credentials
			_ = json.Unmarshal(fmt.Appendf(nil, `{"user":"bot%d","password":"pw-%08d"}`, i, i), &c)
			return &c
		})
	})
	b.Run("held/sealed", func(b *testing.B) {
		held(b, func(i int) any {
			s := k.Seal(fmt.Appendf(nil, `{"user":"bot%d","password":"pw-%08d"}`, i, i), []byte("x"))
			return &s
		})
	})
}
