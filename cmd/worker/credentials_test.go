package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/model"
)

func genKey(t *testing.T) string {
	t.Helper()
	k, err := credkey.Generate()
	require.NoError(t, err)
	return k
}

func keyFile(t *testing.T, keys ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "credentials.key")
	require.NoError(t, os.WriteFile(p, []byte(strings.Join(keys, "\n")+"\n"), 0o600))
	return p
}

// TestCredentialsFlags: the keys come from a file or a variable, not both;
// a file that holds no key is refused at start naming the file and line,
// never showing its text; the limits take sensible values only.
func TestCredentialsFlags(t *testing.T) {
	k := genKey(t)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--credentials-key-file", "k"}, map[string]string{EnvCredentialsKey: k}, "the credentials keys come from --credentials-key-file or PHAROX_CREDENTIALS_KEY, not both"},
		{[]string{"--max-leases-per-consumer", "-1"}, nil, "--max-leases-per-consumer must be 0 (no limit) or positive"},
		{[]string{"--max-waiters", "0"}, nil, "--max-waiters must be positive"},
	} {
		_, err := parseConfig(tc.args, envMap(tc.env))
		require.ErrorContains(t, err, tc.want)
		require.NotContains(t, err.Error(), k)
	}
	cfg, err := parseConfig(nil, envMap(map[string]string{"PHAROX_MAX_LEASES_PER_CONSUMER": "5", EnvCredentialsKey: k}))
	require.NoError(t, err)
	require.Equal(t, 5, cfg.MaxLeasesPerConsumer)
	require.Equal(t, 10000, cfg.MaxWaiters)
	require.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg.CredentialsKey, cfg, cfg), k, "the key prints as [redacted]")

	half := k[:20]
	bad := keyFile(t, "# keys", half)
	cfg, err = parseConfig([]string{"--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--credentials-key-file", bad}, envMap(nil))
	require.NoError(t, err)
	log, sink := newLogSink(zapcore.DebugLevel)
	err = run(t.Context(), cfg, log)
	require.ErrorContains(t, err, "line 2 of "+bad)
	require.NotContains(t, err.Error()+sink.String(), half)
	require.Empty(t, sink.String(), "nothing started")

	_, err = parseWith(newRekeyFlagSet, nil, envMap(nil))
	require.NoError(t, err)
	cfg, _ = parseWith(newRekeyFlagSet, nil, envMap(nil))
	require.ErrorContains(t, cfg.validateRekey(), "rekey needs the credentials keys, the new one first")
}

// TestRekeyCommand rotates the key of a worker's proxies the way the
// README says: the workers get the new key first in their key file (the
// old one after it), then worker rekey runs beside them with the same
// flags; afterwards the old key can go. A rekey without a key it needs
// leaves those proxies and fails. No key text is ever logged.
func TestRekeyCommand(t *testing.T) {
	srv := natstest.RunServer(t)
	url := srv.ClientURL()
	oldKey, newKey, strayKey := genKey(t), genKey(t), genKey(t)
	keys := []string{oldKey, newKey, strayKey}
	var logs []string

	sink := startRun(t, []string{"--nats-url", url, "--credentials-key-file", keyFile(t, oldKey), "--log-level", "debug"}, nil)
	nc := natstest.Connect(t, srv)
	c := client.New(nc, client.WithTimeout(10*time.Second))
	ctx := t.Context()
	_, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "p"})
	require.NoError(t, err)
	in := make([]model.ProxyInput, 50)
	for i := range in {
		in[i] = model.ProxyInput{Host: "203.0.113.9", Port: 1000 + i, Credentials: &model.Credentials{User: "u", Password: "pw"}}
	}
	_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "p", Proxies: in})
	require.NoError(t, err)
	lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "p"})
	require.NoError(t, err)
	require.NotNil(t, lease)
	logs = append(logs, sink.String())

	// A rekey with a key that is not the old one cannot read them.
	cfg, err := parseWith(newRekeyFlagSet, []string{"--nats-url", url, "--credentials-key-file", keyFile(t, strayKey)}, envMap(nil))
	require.NoError(t, err)
	log, rsink := newLogSink(zapcore.DebugLevel)
	var out bytes.Buffer
	_, err = runRekey(ctx, cfg, log, &out)
	require.ErrorContains(t, err, "50 proxies are sealed with a key not among these keys")
	logs = append(logs, rsink.String(), err.Error())

	// The new key first, the old one after it, in the rekey and (as the
	// README says to do first) in the workers.
	both := keyFile(t, newKey, oldKey)
	startRun(t, []string{"--nats-url", url, "--credentials-key-file", both}, nil)
	cfg, err = parseWith(newRekeyFlagSet, []string{"--nats-url", url, "--rekey-concurrency", "8"}, envMap(map[string]string{"PHAROX_CREDENTIALS_KEY_FILE": both}))
	require.NoError(t, err)
	log, rsink = newLogSink(zapcore.DebugLevel)
	out.Reset()
	res, err := runRekey(ctx, cfg, log, &out)
	require.NoError(t, err, rsink.String())
	require.Equal(t, 50, res.Proxies)
	require.GreaterOrEqual(t, res.Rewritten, 49)
	newID, err := credkey.ParseList(newKey, "x")
	require.NoError(t, err)
	require.Contains(t, out.String(), "rekey: 50 proxies in ")
	require.Contains(t, out.String(), "rewritten with key "+newID.Primary())
	require.Contains(t, rsink.String(), `"msg":"rekey: done"`)
	logs = append(logs, rsink.String(), out.String())

	// Now the new key alone reads everything: the old key can go.
	cfg, err = parseWith(newRekeyFlagSet, []string{"--nats-url", url}, envMap(map[string]string{EnvCredentialsKey: newKey}))
	require.NoError(t, err)
	log, rsink = newLogSink(zapcore.DebugLevel)
	out.Reset()
	res, err = runRekey(ctx, cfg, log, &out)
	require.NoError(t, err)
	require.Zero(t, res.Rewritten)
	require.Equal(t, 50, res.Current)
	logs = append(logs, rsink.String(), out.String())
	_, err = c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
	require.NoError(t, err, "the lease held through the rotation")

	all := strings.Join(logs, "\n")
	require.Contains(t, all, "(encrypts)", "the key ids are logged")
	for _, k := range keys {
		require.NotContains(t, all, k, "a key was logged")
	}
}

// TestJetStreamEncryptionFromConfig: a --nats-config with a jetstream
// block holding a key makes the embedded server encrypt everything it
// stores, so even a worker without a credentials key leaves no password
// (nor any other field) readable in its data directory. Without the block
// the same password is there in clear, which shows the search works.
func TestJetStreamEncryptionFromConfig(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "nats.conf")
			text := "jetstream {\n  max_memory_store: 64MB\n}\n"
			if encrypted {
				text = "jetstream {\n  cipher: aes\n  key: \"" + genKey(t) + "\"\n}\n"
			}
			require.NoError(t, os.WriteFile(conf, []byte(text), 0o600))
			port := natstest.FreePort(t)
			dataDir := t.TempDir()
			cfg, err := parseConfig([]string{"--nats-config", conf, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir}, envMap(nil))
			require.NoError(t, err)
			log, sink := newLogSink(zapcore.InfoLevel)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- run(ctx, cfg, log) }()
			select {
			case <-sink.serving:
			case err := <-done:
				t.Fatalf("worker stopped: %v\n%s", err, sink)
			}

			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
			require.NoError(t, err)
			c := client.New(nc, client.WithTimeout(10*time.Second))
			const pw, host = "js-pw-3Hq8", "198.51.100.23"
			_, err = c.CreatePool(ctx, model.PoolCreateRequest{Name: "p"})
			require.NoError(t, err)
			_, err = c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "p", Proxies: []model.ProxyInput{{Host: host, Port: 1, Credentials: &model.Credentials{User: "u", Password: pw}}}})
			require.NoError(t, err)
			got, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "p"})
			require.NoError(t, err)
			require.NotNil(t, got)
			nc.Close()
			cancel() // the embedded server stops, with everything on disk
			require.NoError(t, <-done)

			var stored bytes.Buffer
			require.NoError(t, filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				data, err := os.ReadFile(path)
				stored.Write(data)
				return err
			}))
			require.Positive(t, stored.Len())
			for _, s := range []string{pw, host} {
				if encrypted {
					require.NotContains(t, stored.String(), s)
				} else {
					require.Contains(t, stored.String(), s)
				}
			}
		})
	}
}
