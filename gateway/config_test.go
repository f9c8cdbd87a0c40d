package gateway_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/gateway"
)

func parseConfig(t *testing.T, env map[string]string, args ...string) (gateway.Config, error) {
	t.Helper()
	var c gateway.Config
	fs := pflag.NewFlagSet("gateway", pflag.ContinueOnError)
	c.AddFlags(fs)
	require.NoError(t, fs.Parse(args))
	getenv := func(k string) string { return env[k] }
	if err := c.ApplyEnv(fs, getenv); err != nil {
		return c, err
	}
	return c, c.Validate(getenv)
}

func TestConfig(t *testing.T) {
	t.Parallel()
	c, err := parseConfig(t, nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.Listen)
	require.Equal(t, "", c.SOCKSListen)
	require.Equal(t, "gateway", c.Consumer)
	require.Equal(t, 2, c.Retries)
	require.Equal(t, 60, c.LeaseSeconds)
	require.Equal(t, "", c.MetricsListen)
	require.False(t, c.MetricsOn(), "metrics are off by default")

	// The environment fills what the command line leaves; a flag wins.
	c, err = parseConfig(t, map[string]string{"PHAROX_GATEWAY_RETRIES": "4", "PHAROX_GATEWAY_POOL": "latam",
		"PHAROX_GATEWAY_DRAIN_TIMEOUT": "3s"}, "--retries", "1")
	require.NoError(t, err)
	require.Equal(t, 1, c.Retries)
	require.Equal(t, "latam", c.Pool)
	require.Equal(t, 3*time.Second, c.DrainTimeout)

	// Metrics on their own listener, which needs no token off loopback.
	c, err = parseConfig(t, map[string]string{"PHAROX_GATEWAY_METRICS_LISTEN": ":9465"})
	require.NoError(t, err)
	require.Equal(t, ":9465", c.MetricsListen)
	require.True(t, c.MetricsOn())
	c, err = parseConfig(t, map[string]string{"PHAROX_GATEWAY_METRICS_LISTEN": ":9465"}, "--metrics-listen", "off")
	require.NoError(t, err)
	require.False(t, c.MetricsOn())

	_, err = parseConfig(t, map[string]string{"PHAROX_GATEWAY_RETRIES": "many"})
	require.ErrorContains(t, err, `PHAROX_GATEWAY_RETRIES="many"`)

	for _, bad := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--listen", "0.0.0.0:8080"}, "no client token is configured"},
		{[]string{"--socks-listen", ":1080"}, "no client token is configured"},
		{[]string{"--listen", "8080"}, "--listen must be host:port"},
		{[]string{"--metrics-listen", "9465"}, "--metrics-listen must be host:port"},
		{[]string{"--retries", "11"}, "--retries must be 0..10"},
		{[]string{"--lease-seconds", "0"}, "--lease-seconds must be"},
		{[]string{"--request-timeout", "0s"}, "--request-timeout must be positive"},
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--pool", "no pool"}, "--pool must match"},
		{[]string{"--log-level", "loud"}, "--log-level must be"},
	} {
		_, err := parseConfig(t, nil, bad.args...)
		require.ErrorContains(t, err, bad.msg, bad.args)
	}
	// Tokens make any address acceptable.
	_, err = parseConfig(t, map[string]string{gateway.TokensEnv: "s3cret"}, "--listen", "0.0.0.0:8080")
	require.NoError(t, err)
	_, err = parseConfig(t, nil, "--listen", "[::1]:8080", "--socks-listen", "localhost:1080")
	require.NoError(t, err)

	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.txt")
	require.NoError(t, os.WriteFile(file, []byte("# none yet\n"), 0o600))
	c, err = parseConfig(t, nil, "--token-file", file, "--listen", "0.0.0.0:8080")
	require.NoError(t, err)
	_, err = c.LoadTokens(func(string) string { return "" })
	require.ErrorContains(t, err, "holds no token")
	require.NoError(t, os.WriteFile(file, []byte("a pools=x\nb\n"), 0o600))
	ts, err := c.LoadTokens(func(k string) string { return map[string]string{gateway.TokensEnv: "c;d consumer=z"}[k] })
	require.NoError(t, err)
	require.Equal(t, 4, ts.Len())
	c.TokenFile = filepath.Join(dir, "missing.txt")
	_, err = c.LoadTokens(func(string) string { return "" })
	require.ErrorContains(t, err, "--token-file")
}
