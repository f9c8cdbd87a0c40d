package monitor_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	pm "github.com/pharox/pharox-nats/model"
)

const timeout = 10 * time.Second

// listen serves mon on a loopback port for the test.
func listen(t *testing.T, mon *monitor.Monitor) string {
	t.Helper()
	srv, err := monitor.Listen("127.0.0.1:0", mon, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	return "http://" + srv.Addr()
}

// startMonitored runs a worker built from cfg on an embedded server, with
// a new monitor served on a loopback port (cfg's Conn and Monitor are set
// here), stopped when the test ends: the setup of every test that reads
// what a running worker counts. It returns the worker's connection, the
// worker and the monitor's base URL.
func startMonitored(t *testing.T, cfg worker.Config) (*nats.Conn, *worker.Worker, string) {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	cfg.Conn = nc
	cfg.Monitor = monitor.New()
	base := listen(t, cfg.Monitor)
	w, err := worker.Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(t.Context()) })
	return nc, w, base
}

// poolWithProxy creates pool name through c with one proxy in it, at
// 127.0.0.1:port.
func poolWithProxy(t *testing.T, c *client.Client, name string, port int) {
	t.Helper()
	_, err := c.CreatePool(t.Context(), pm.PoolCreateRequest{Name: name})
	require.NoError(t, err)
	_, err = c.AddProxies(t.Context(), pm.ProxiesAddRequest{PoolName: name, Proxies: []pm.ProxyInput{{Host: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
}

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// scrape reads /metrics in the Prometheus text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code, body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return families
}

// value is the value of the counter or gauge of family whose labels are
// exactly labels; ok is false when there is no such series.
func value(families map[string]*dto.MetricFamily, family string, labels map[string]string) (float64, bool) {
	for _, m := range series(families, family, labels) {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// series are the metrics of family whose labels include labels.
func series(families map[string]*dto.MetricFamily, family string, labels map[string]string) []*dto.Metric {
	f := families[family]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		if hasLabels(m, labels) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.Label {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// srvStats asks every worker for $SRV.STATS of the pharox service and
// returns the one answer (there is one worker in these tests).
func srvStats(t *testing.T, nc *nats.Conn) micro.Stats {
	t.Helper()
	subject, err := micro.ControlSubject(micro.StatsVerb, "pharox", "")
	require.NoError(t, err)
	msg, err := nc.Request(subject, nil, timeout)
	require.NoError(t, err)
	var st micro.Stats
	require.NoError(t, json.Unmarshal(msg.Data, &st))
	return st
}
