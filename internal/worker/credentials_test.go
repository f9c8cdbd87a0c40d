package worker_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

func newRing(t *testing.T, keys ...string) *credkey.Ring {
	t.Helper()
	r, err := credkey.ParseList(strings.Join(keys, ","), "test")
	require.NoError(t, err)
	return r
}

func newKey(t *testing.T) string {
	t.Helper()
	k, err := credkey.Generate()
	require.NoError(t, err)
	return k
}

func ptr[T any](v T) *T { return &v }

// streamMessages returns every message a stream holds, subject, headers
// and data as one text each.
func streamMessages(t *testing.T, nc *nats.Conn, stream string) []string {
	return streamParts(t, nc, stream, true)
}

// streamHeaders returns the headers of every message a stream holds.
func streamHeaders(t *testing.T, nc *nats.Conn, stream string) []string {
	return streamParts(t, nc, stream, false)
}

func streamParts(t *testing.T, nc *nats.Conn, stream string, withData bool) []string {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			continue // deleted (history 1)
		}
		var b strings.Builder
		b.WriteString(m.Subject + "\n")
		for k, vs := range m.Header {
			b.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
		if withData {
			b.Write(m.Data)
		}
		out = append(out, b.String())
	}
	require.NotEmpty(t, out, stream)
	return out
}

// storeHolds reports whether any file under the server's store directory
// contains needle.
func storeHolds(t *testing.T, srv *server.Server, needle string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(srv.JetStreamConfig().StoreDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = bytes.Contains(data, []byte(needle))
		return nil
	})
	require.NoError(t, err)
	return found
}

// flushedToStore adds a proxy with a unique host to pool after everything
// else and waits until the server's files hold it: the proxies stream
// appends in order, so every earlier write is on disk too.
func flushedToStore(t *testing.T, c *client.Client, srv *server.Server, pool string) {
	t.Helper()
	marker := "marker-" + uuid.NewString() + ".example"
	_, err := c.AddProxies(t.Context(), model.ProxiesAddRequest{PoolName: pool, Proxies: []model.ProxyInput{{Host: marker, Port: 1}}})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return storeHolds(t, srv, marker) }, 10*time.Second, 20*time.Millisecond, "the marker never reached the store's files")
}

// TestCredentialsAtRest adds a proxy with a known password to a worker
// with a credentials key and to one without, and looks for the password
// in the proxies bucket's raw messages (data and headers), the events and
// the server's store directory: absent with the key, present without.
// Replies carry it decrypted either way.
func TestCredentialsAtRest(t *testing.T) {
	t.Parallel()
	for _, keyed := range []bool{true, false} {
		name := map[bool]string{true: "with a key", false: "without a key"}[keyed]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv, nc := runServer(t)
			cfg := workertest.Config{}
			if keyed {
				cfg.CredentialsKeys = newRing(t, newKey(t))
			}
			workertest.Start(t, nc, cfg)
			c := client.New(nc, client.WithTimeout(timeout))
			ctx := t.Context()
			pw := "pw-" + uuid.NewString()[:8]

			_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "rest"})
			require.NoError(t, err)
			added, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "rest", Proxies: []model.ProxyInput{
				{Host: "203.0.113.5", Port: 1080, Protocol: ptr(model.ProtocolSOCKS5), Credentials: &model.Credentials{User: "bot", Password: pw}}}})
			require.NoError(t, err)
			require.Equal(t, pw, added[0].Credentials.Password)
			id := added[0].ID

			// Every reply carries the credentials decrypted.
			lease, proxy, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "rest", ConsumerName: ptr("c1")})
			require.NoError(t, err)
			require.NotNil(t, lease)
			require.Contains(t, proxy.URL, pw)
			got, err := c.GetProxy(ctx, id)
			require.NoError(t, err)
			require.Equal(t, pw, got.Credentials.Password)
			page, err := c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "rest"})
			require.NoError(t, err)
			require.Equal(t, pw, page.Proxies[0].Credentials.Password)
			updated, err := c.UpdateProxy(ctx, model.ProxyUpdateRequest{ProxyID: id, Country: model.Some("AR")})
			require.NoError(t, err)
			require.Equal(t, pw, updated.Credentials.Password)
			_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
			require.NoError(t, err)

			raw := strings.Join(streamMessages(t, nc, kvstore.ProxiesStream), "\n")
			headers := strings.Join(streamHeaders(t, nc, kvstore.ProxiesStream), "\n")
			require.Contains(t, headers, "Pharox-Outbox", "the writes' outbox headers are there")
			require.NotContains(t, headers, pw, "the outbox headers carry events, never a proxy's credentials")
			events := strings.Join(streamMessages(t, nc, "PHAROX_EVENTS"), "\n")
			require.Contains(t, events, lease.ID, "the events are there")
			require.NotContains(t, events, pw, "events carry leases, never a proxy's credentials")
			flushedToStore(t, c, srv, "rest")
			if keyed {
				require.NotContains(t, raw, pw)
				require.Contains(t, raw, `pxc1.`+cfg.CredentialsKeys.Primary()+`.`, "sealed in the record")
				require.False(t, storeHolds(t, srv, pw), "the password is in the server's files")
			} else {
				require.Contains(t, raw, pw, "without a key the record holds it in clear")
				require.True(t, storeHolds(t, srv, pw))
			}
			require.True(t, storeHolds(t, srv, "203.0.113.5"), "the rest of the record is in clear: the search works")
		})
	}
}

// TestWorkerWithoutTheKey runs a worker without any key, and one with
// another key, on buckets where a worker with the key sealed a proxy's
// credentials (one worker at a time: two prefixes on one account would
// share one events stream). They never lease that proxy, answer 503 (never
// the proxy without its credentials) to what would show it, count and warn
// about it; their own writes of it (a release) keep the sealed credentials,
// which the worker with the key still reads.
func TestWorkerWithoutTheKey(t *testing.T) {
	t.Parallel()
	_, nc := runServer(t)
	ctx := t.Context()
	ring := newRing(t, newKey(t))
	c := client.New(nc, client.WithTimeout(timeout))
	withKey := func() func() {
		w := workertest.Start(t, nc, workertest.Config{CredentialsKeys: ring})
		return w.Stop
	}
	const pw = "pw-only-with-the-key"
	stop := withKey()
	_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "sealed"})
	require.NoError(t, err)
	added, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "sealed", Proxies: []model.ProxyInput{
		{Host: "203.0.113.7", Port: 3128, MaxConcurrency: ptr(2), Credentials: &model.Credentials{User: "u", Password: pw}}}})
	require.NoError(t, err)
	id := added[0].ID
	stop()

	for _, tc := range []struct {
		name string
		keys *credkey.Ring
	}{{"no key", nil}, {"another key", newRing(t, newKey(t))}} {
		t.Run(tc.name, func(t *testing.T) {
			stop := withKey()
			lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "sealed", ConsumerName: ptr("c1")})
			require.NoError(t, err)
			require.NotNil(t, lease)
			stop()

			core, logs := observer.New(zapcore.WarnLevel)
			w := workertest.Start(t, nc, workertest.Config{CredentialsKeys: tc.keys, Log: zap.New(core)})
			lease2, proxy, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "sealed"})
			require.NoError(t, err)
			require.Nil(t, lease2, "not eligible on a worker that cannot decrypt it")
			require.Nil(t, proxy)
			st, err := c.Stats(ctx, "sealed")
			require.NoError(t, err)
			require.Equal(t, 1, st.AvailableProxies, "the pool's statistics are the same on every worker")

			refused := func(err error) {
				t.Helper()
				require.ErrorIs(t, err, model.ErrUnavailable)
				var ce *client.Error
				require.ErrorAs(t, err, &ce)
				require.Equal(t, 503, ce.Status)
				require.Contains(t, ce.Message, "sealed with key "+ring.Primary()+", which this worker does not have")
				require.NotContains(t, ce.Message, pw)
			}
			_, err = c.GetProxy(ctx, id)
			refused(err)
			_, err = c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "sealed"})
			refused(err)
			_, err = c.UpdateProxy(ctx, model.ProxyUpdateRequest{ProxyID: id, Country: model.Some("BR")})
			refused(err)
			_, err = c.ApplyHealth(ctx, model.HealthApplyRequest{ProxyID: id, Status: model.ProxyInactive, Protocol: model.ProtocolHTTP})
			refused(err)
			require.Positive(t, w.Store.UnreadableCredentials())
			warned := logs.FilterMessageSnippet("sealed with a key this worker does not have").All()
			require.Len(t, warned, 1)
			require.Equal(t, ring.Primary(), warned[0].ContextMap()["key_id"])

			// Its release writes the record: the sealed credentials go on.
			released, err := c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: ptr("c1")})
			require.NoError(t, err)
			require.Equal(t, model.LeaseReleased, released.Status)
			w.Stop()

			defer withKey()()
			got, err := c.GetProxy(ctx, id)
			require.NoError(t, err)
			require.Equal(t, pw, got.Credentials.Password)
			require.Zero(t, got.CurrentLeases)
			require.Nil(t, got.Country, "the refused update changed nothing")
			require.Equal(t, model.ProxyActive, got.Status)
		})
	}
}

// keep the imports used by helpers of other files.
var _ = context.Background
