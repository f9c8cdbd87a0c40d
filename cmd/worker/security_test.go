package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/natsconn"
)

const deployConfig = "../../deploy/nats-server.conf"

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestNATSFlags(t *testing.T) {
	pw := map[string]string{natsconn.EnvPassword: "pw"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		// Embedded (no --nats-url) without --nats-config: no users to log in as.
		{[]string{"--nats-creds", "w.creds"}, nil, "--nats-creds: the embedded server has no users to log in as; give --nats-url to join a NATS deployment, or --nats-config FILE"},
		{[]string{"--nats-user", "worker"}, pw, "--nats-user, PHAROX_NATS_PASSWORD: the embedded server has no users"},
		{nil, map[string]string{natsconn.EnvToken: "t"}, "PHAROX_NATS_TOKEN: the embedded server has no users"},
		{[]string{"--nats-tls-ca", "ca.pem"}, nil, "--nats-tls-ca: the worker talks to its embedded server in-process, without TLS"},
		// Server flags need the embedded server.
		{[]string{"--nats-url", "nats://h:4222", "--nats-config", "deploy/nats-server.conf"}, nil, "--nats-config configures the embedded server, which does not start with --nats-url"},
		{[]string{"--nats-url", "nats://h:4222", "--tls-cert", "c", "--tls-key", "k"}, nil, "--tls-cert/--tls-key serve TLS on the embedded server"},
		{[]string{"--tls-cert", "c"}, nil, "needs both --tls-cert and --tls-key"},
		// The login itself.
		{[]string{"--nats-url", "nats://h:4222", "--nats-user", "w"}, map[string]string{natsconn.EnvPassword: "p", natsconn.EnvToken: "t"}, "choose one way to log in to NATS, got --nats-user and PHAROX_NATS_TOKEN"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-creds", "a", "--nats-nkey", "b"}, nil, "--nats-nkey and --nats-creds"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-tls-cert", "c"}, nil, "mutual TLS needs both"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-password", "p"}, nil, "flag provided but not defined: -nats-password"},
	} {
		_, err := parseConfig(tc.args, envMap(tc.env))
		require.ErrorContains(t, err, tc.want, "%q %v", tc.args, tc.env)
	}

	for _, ok := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--nats-url", "nats://h:4222", "--nats-creds", "w.creds"}, nil},
		{[]string{"--nats-config", "deploy/nats-server.conf", "--nats-user", "worker"}, pw},
		{nil, map[string]string{"PHAROX_NATS_URL": "tls://h:4222", "PHAROX_NATS_USER": "worker", natsconn.EnvPassword: "pw", "PHAROX_NATS_TLS_CA": "ca.pem"}},
		{[]string{"--tls-cert", "c", "--tls-key", "k"}, nil},
	} {
		_, err := parseConfig(ok.args, envMap(ok.env))
		require.NoError(t, err, "%q", ok.args)
	}

	// Which flags were given decides whether --listen and --data-dir win
	// over --nats-config.
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:5000"}, envMap(map[string]string{"PHAROX_DATA_DIR": "/d"}))
	require.NoError(t, err)
	require.True(t, cfg.set["listen"])
	require.True(t, cfg.set["data-dir"])
	require.False(t, cfg.set["nats-url"])
}

// serving is a zap logger that keeps what the worker logs and closes a
// channel when it logs that it serves.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	serving chan struct{}
	once    sync.Once
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}
func (s *logSink) Sync() error { return nil }

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func newLogSink(level zapcore.Level) (*zap.Logger, *logSink) {
	sink := &logSink{serving: make(chan struct{})}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), sink, level)
	return zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "pharox worker serving" {
			sink.once.Do(func() { close(sink.serving) })
		}
		return nil
	})), sink
}

// startRun runs the worker's run function with args and env until the test
// ends, and waits until it serves.
func startRun(t *testing.T, args []string, env map[string]string) *logSink {
	t.Helper()
	cfg, err := parseConfig(args, envMap(env))
	require.NoError(t, err)
	log, sink := newLogSink(zapcore.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-sink.serving:
	case err := <-done:
		done <- err
		t.Fatalf("worker stopped: %v\n%s", err, sink)
	case <-time.After(20 * time.Second):
		t.Fatalf("worker not serving after 20s\n%s", sink)
	}
	return sink
}

func TestWorkerRefusesAnOpenListener(t *testing.T) {
	port := strconv.Itoa(natstest.FreePort(t))
	cfg, err := parseConfig([]string{"--listen", "0.0.0.0:" + port, "--data-dir", t.TempDir()}, envMap(nil))
	require.NoError(t, err)
	log, sink := newLogSink(zapcore.DebugLevel)
	err = run(t.Context(), cfg, log)
	require.ErrorContains(t, err, "refusing to listen on 0.0.0.0:"+port+": that address is reachable from other machines and the embedded NATS server asks no login")
	require.ErrorContains(t, err, "--listen 127.0.0.1:"+port)
	require.ErrorContains(t, err, "--nats-config FILE with users and permissions")
	require.Empty(t, sink.String(), "nothing started")
	_, derr := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
	require.Error(t, derr, "nothing listens")
}

// TestWorkerAsWorkerRole runs the whole worker (store, events, health
// sweeps, broker) logged in as the shipped config's `worker` user: joined
// to a server with --nats-url, and embedded with --nats-config on an
// address other machines could reach, which the config's logins make
// acceptable.
func TestWorkerAsWorkerRole(t *testing.T) {
	opts := authtest.DeployOptions(t, deployConfig)
	srv, slog := authtest.RunServerLogged(t, opts)
	workerEnv := map[string]string{"PHAROX_NATS_USER": "worker", natsconn.EnvPassword: authtest.WorkerPassword}

	t.Run("joined", func(t *testing.T) {
		sink := startRun(t, []string{"--nats-url", srv.ClientURL(), "--log-level", "debug"}, workerEnv)
		require.Contains(t, sink.String(), `"nats_login":"user \"worker\" (password from PHAROX_NATS_PASSWORD)"`)
		ctx := t.Context()
		admin := roleClient(t, srv.ClientURL(), "admin", authtest.AdminPassword)
		leaser := roleClient(t, srv.ClientURL(), "leaser", authtest.LeaserPassword)

		health := make(chan client.Event, 4)
		sub, err := leaser.SubscribeEvents(ctx, func(ev client.Event) { health <- ev }, client.WithEventNames(model.EventHealth))
		require.NoError(t, err)
		defer sub.Stop()

		// A pool whose only proxy is down, swept every half second: the
		// sweep claims it (PHAROX_HEALTH_CLAIMS), probes, counts the
		// failure (PHAROX_HEALTH) and marks the proxy inactive.
		closed := natstest.FreePort(t)
		_, err = admin.CreatePool(ctx, model.PoolCreateRequest{Name: "swept"})
		require.NoError(t, err)
		_, err = admin.UpdatePool(ctx, model.PoolUpdateRequest{Name: "swept", HealthCheck: model.Some(model.HealthCheck{
			Enabled: true, IntervalSeconds: 0.5, FailureThreshold: 1,
			Options: &model.HealthCheckOptions{TargetURL: "http://127.0.0.1:" + strconv.Itoa(closed) + "/", Timeout: 1, Attempts: 1},
		})})
		require.NoError(t, err)
		added, err := admin.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "swept", Proxies: []model.ProxyInput{{Host: "127.0.0.1", Port: closed}}})
		require.NoError(t, err)
		lease, _, err := leaser.Acquire(ctx, model.AcquireRequest{PoolName: "swept"})
		require.NoError(t, err)
		require.NotNil(t, lease)
		_, err = leaser.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		require.NoError(t, err)
		select {
		case ev := <-health:
			require.Equal(t, added[0].ID, ev.Health.ProxyID)
		case <-time.After(10 * time.Second):
			t.Fatal("no health event from the sweep")
		}
		results, err := admin.HealthCheck(ctx, model.HealthCheckRequest{ProxyID: &added[0].ID})
		require.NoError(t, err)
		require.Len(t, results, 1)

		for _, v := range slog.Violations() {
			require.NotContains(t, v, "user:worker", "the worker role lacks a permission")
		}
	})

	t.Run("embedded, listening on every interface", func(t *testing.T) {
		port := strconv.Itoa(natstest.FreePort(t))
		sink := startRun(t, []string{"--nats-config", deployConfig, "--listen", "0.0.0.0:" + port, "--data-dir", t.TempDir()}, workerEnv)
		require.Contains(t, sink.String(), `"listen":"0.0.0.0:`+port+`"`)
		url := "nats://127.0.0.1:" + port
		leaser := roleClient(t, url, "leaser", authtest.LeaserPassword)
		_, err := leaser.Stats(t.Context(), "none")
		require.ErrorIs(t, err, model.ErrPoolNotFound, "the worker answers")

		_, err = nats.Connect(url)
		require.ErrorIs(t, err, nats.ErrAuthorization, "an anonymous client is refused")
	})

	t.Run("a wrong password stops the worker", func(t *testing.T) {
		cfg, err := parseConfig([]string{"--nats-url", srv.ClientURL()}, envMap(map[string]string{"PHAROX_NATS_USER": "worker", natsconn.EnvPassword: "wrong-pw-123"}))
		require.NoError(t, err)
		log, sink := newLogSink(zapcore.DebugLevel)
		err = run(t.Context(), cfg, log)
		require.ErrorIs(t, err, natsconn.ErrLoginRefused)
		require.ErrorContains(t, err, `refused the login (Authorization Violation) as user "worker" (password from PHAROX_NATS_PASSWORD): check the user name (--nats-user) and its password`)
		require.NotContains(t, err.Error()+sink.String(), "wrong-pw-123")
	})
}

func roleClient(t *testing.T, url, user, password string) *client.Client {
	t.Helper()
	cfg := natsconn.Config{URL: url, User: user, Password: natsconn.Secret(password), InboxPrefix: "_INBOX_" + user}
	s, err := cfg.Resolve()
	require.NoError(t, err)
	nc, err := s.Connect(nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s refused: %v", user, err)
		}
	}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return client.New(nc, client.WithTimeout(10*time.Second))
}

// TestEmbeddedTLS serves TLS on the embedded server's listener; the worker
// itself talks to it in-process.
func TestEmbeddedTLS(t *testing.T) {
	pki := authtest.NewPKI(t)
	port := strconv.Itoa(natstest.FreePort(t))
	startRun(t, []string{"--listen", "127.0.0.1:" + port, "--data-dir", t.TempDir(), "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey}, nil)

	cfg := natsconn.Config{URL: "tls://127.0.0.1:" + port, TLSCA: pki.CAFile}
	s, err := cfg.Resolve()
	require.NoError(t, err)
	nc, err := s.Connect()
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, nc.TLSRequired())
	_, err = client.New(nc).Stats(t.Context(), "none")
	require.ErrorIs(t, err, model.ErrPoolNotFound, "the worker answers over TLS")

	_, err = natsconn.Settings{URL: "nats://127.0.0.1:" + port}.Connect()
	require.ErrorIs(t, err, natsconn.ErrTLS, "without the CA the server's certificate is not trusted")
}
