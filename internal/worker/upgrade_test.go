package worker_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/testclock"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// A worker of this version starts on the data directory of the previous
// release (0.1.0, the last landed before pool tombstones, the outbox and
// the replica packages) and serves what it holds: the same pools, proxies,
// consumers and active leases with their fencing tokens, releasable; an
// expired lease is recorded once; new leases get later tokens. The fixture
// was written by that release's `go run ./cmd/worker --seed
// examples/seed.json` and `pharox acquire/release` (testdata/upgrade;
// replies as the old worker gave them). Ended-lease records are not checked:
// the server drops them after their retention on its own clock.
func TestStartsOnThePreviousVersionsData(t *testing.T) {
	var fixture struct {
		Active, Active2, Released, Expiring model.AcquireReply
	}
	raw, err := os.ReadFile("testdata/upgrade/v0.1.0-replies.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &fixture))
	dir := t.TempDir()
	untar(t, "testdata/upgrade/v0.1.0-data.tar.gz", dir)
	srv := runServerOn(t, filepath.Join(dir, "data"))

	// The worker's clock is ten seconds after the fixture's leases were
	// taken: the 24 h ones are active, the 1 s one has expired.
	clock := testclock.At(fixture.Active.Lease.AcquiredAt.Add(10 * time.Second))
	workertest.Start(t, natstest.Connect(t, srv), workertest.Config{Clock: clock.Now})
	c := client.New(natstest.Connect(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pools, err := c.ListPools(ctx)
	require.NoError(t, err)
	names := map[string]string{}
	for _, p := range pools {
		names[p.Name] = p.ID
	}
	require.Equal(t, fixture.Active.Lease.PoolID, names["latam"])
	require.Equal(t, fixture.Active2.Lease.PoolID, names["datacenter"])
	require.Contains(t, names, "empty")

	page, err := c.ListProxies(ctx, model.ProxiesListRequest{PoolName: "latam"})
	require.NoError(t, err)
	require.Len(t, page.Proxies, 4)
	byID := map[string]model.Proxy{}
	for _, p := range page.Proxies {
		byID[p.ID] = p
	}
	require.Equal(t, fixture.Released.Proxy.URL, byID[fixture.Released.Proxy.ID].URL, "credentials survive")
	require.Equal(t, 1, byID[fixture.Active.Proxy.ID].CurrentLeases)

	for _, f := range []model.AcquireReply{fixture.Active, fixture.Active2} {
		l, err := c.Lease(ctx, f.Lease.ID)
		require.NoError(t, err)
		require.Equal(t, model.LeaseActive, l.Status)
		require.Equal(t, f.Lease.FencingToken, l.FencingToken, "a lease keeps its fencing token")
		require.Equal(t, f.Lease.ProxyID, l.ProxyID)
	}
	st, err := c.Stats(ctx, "latam")
	require.NoError(t, err)
	require.Equal(t, 4, st.TotalProxies)
	require.Equal(t, 1, st.TotalLeases, "the 1 s lease has expired, the 24 h one holds")

	n, err := c.Cleanup(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the expired lease is recorded once")
	l, err := c.Lease(ctx, fixture.Expiring.Lease.ID)
	require.NoError(t, err)
	require.Equal(t, model.LeaseExpired, l.Status)

	released, err := c.Release(ctx, model.ReleaseRequest{LeaseID: fixture.Active.Lease.ID, ConsumerName: &fixture.Active.Lease.ConsumerName})
	require.NoError(t, err)
	require.Equal(t, model.LeaseReleased, released.Status)
	require.Equal(t, fixture.Active.Lease.FencingToken, released.FencingToken)

	country := "AR"
	lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "latam", Filters: &model.ProxyFilters{Country: &country}})
	require.NoError(t, err)
	require.NotNil(t, lease)
	require.Greater(t, lease.FencingToken, fixture.Active.Lease.FencingToken)

	consumers, err := c.ListConsumers(ctx)
	require.NoError(t, err)
	var found bool
	for _, cn := range consumers {
		found = found || cn.Name == "crawler-9"
	}
	require.True(t, found, "consumers survive")
}

// runServerOn starts a JetStream server on a random port over an existing
// store directory.
func runServerOn(t *testing.T, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: storeDir, MaxPayload: 8 << 20})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		require.NoError(t, err)
		path := filepath.Join(dir, filepath.Clean(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(path, 0o755))
		case tar.TypeReg:
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			out, err := os.Create(path)
			require.NoError(t, err)
			_, err = io.Copy(out, tr)
			require.NoError(t, err)
			require.NoError(t, out.Close())
		}
	}
}
