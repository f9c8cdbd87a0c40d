package main

import (
	"flag"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMetricsListenFlag: the flag and its variable, the refusal of an
// address that cannot work.
func TestMetricsListenFlag(t *testing.T) {
	cfg, err := parseConfig(nil, envMap(map[string]string{"PHAROX_METRICS_LISTEN": ":9999"}))
	require.NoError(t, err)
	require.Equal(t, ":9999", cfg.MetricsListen)
	cfg, err = parseConfig([]string{"--metrics-listen", "off"}, envMap(map[string]string{"PHAROX_METRICS_LISTEN": ":9999"}))
	require.NoError(t, err)
	require.Equal(t, "off", cfg.MetricsListen, "the flag wins over its variable")
	_, err = parseConfig([]string{"--metrics-listen", "9464"}, envMap(nil))
	require.ErrorContains(t, err, "--metrics-listen must be host:port")
}

// TestRunServesMetrics runs the worker as main does with --metrics-listen
// on a free loopback port: /readyz is 200 once it serves, /metrics has the
// seed's pool, and the listener is gone once the worker stopped.
func TestRunServesMetrics(t *testing.T) {
	cfg, err := parseConfig([]string{"--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--seed", "../../examples/seed.json",
		"--metrics-listen", "127.0.0.1:0"}, envMap(nil))
	require.NoError(t, err)
	r := startObservedRun(t, cfg)
	addr, _ := r.serving["metrics_listen"].(string)
	require.NotEqual(t, "off", addr)
	base := "http://" + addr
	code, body := httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = httpGet(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `pharox_pool_proxies{pool="latam",status="active"} 4`)

	r.cancel()
	require.NoError(t, <-r.done)
	_, err = http.Get(base + "/healthz")
	require.Error(t, err, "the listener closes with the worker")
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestReadmeNamesEveryFlag: the README documents every worker flag.
func TestReadmeNamesEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	var cfg config
	newFlagSet(&cfg).VisitAll(func(f *flag.Flag) {
		require.Contains(t, string(readme), "`--"+f.Name+"`", "README.md does not document --%s", f.Name)
	})
}
