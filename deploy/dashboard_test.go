package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
)

const (
	dashboardFile = "grafana/dashboards/pharox.json"
	natsTimeout   = 10 * time.Second
)

// TestDashboardQueriesNameExportedMetrics parses every PromQL expression of
// the Grafana dashboard with Prometheus's own parser and checks that each
// metric it selects is one a worker exports (read from a real worker's
// registry), so a renamed metric cannot leave a panel silently empty.
func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(data, &dash))
	exprs, variables := dashboardQueries(dash)
	require.NotEmpty(t, exprs)

	exported := exportedMetrics(t)
	p := parser.NewParser(parser.Options{})
	used := map[string]bool{}
	for _, expr := range exprs {
		query := grafanaVariables(t, expr)
		ast, err := p.ParseExpr(query)
		require.NoError(t, err, "dashboard expression %q", expr)
		names := selectorNames(ast)
		require.NotEmpty(t, names, "%q selects no metric by name", expr)
		for _, name := range names {
			require.True(t, exported[name], "%q selects %s, which the worker does not export", expr, name)
			used[name] = true
		}
	}
	for _, v := range variables {
		require.True(t, exported[v], "a dashboard variable reads %s, which the worker does not export", v)
	}
	// What the dashboard must show.
	for _, name := range []string{"pharox_pool_proxies", "pharox_pool_available_proxies", "pharox_pool_active_leases", "pharox_pool_cooling_proxies",
		"pharox_acquire_total", "pharox_request_duration_seconds_bucket", "pharox_cas_conflicts_total", "pharox_waiters",
		"pharox_expired_total", "pharox_replica_lag_seconds"} {
		require.True(t, used[name], "no panel shows %s", name)
	}

	// Every panel reads the datasource the provisioning creates.
	prov, err := os.ReadFile("grafana/provisioning/datasources/prometheus.yaml")
	require.NoError(t, err)
	require.Contains(t, string(prov), "uid: prometheus")
	for _, uid := range datasourceUIDs(dash) {
		require.Equal(t, "prometheus", uid)
	}
}

// dashboardQueries returns the targets' expressions and the metrics the
// template variables read (label_values(metric, label)).
func dashboardQueries(dash map[string]any) (exprs, variableMetrics []string) {
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(c, k)
			}
		case []any:
			for _, c := range v {
				walk(c, key)
			}
		case string:
			switch key {
			case "expr":
				exprs = append(exprs, v)
			case "query", "definition":
				if m := labelValues.FindStringSubmatch(v); m != nil {
					variableMetrics = append(variableMetrics, m[1])
				}
			}
		}
	}
	walk(dash, "")
	return exprs, variableMetrics
}

// grafanaVariables replaces the Grafana variables the dashboard uses with
// values PromQL accepts; any other variable fails the test (add it here).
func grafanaVariables(t *testing.T, expr string) string {
	out := strings.NewReplacer("$__rate_interval", "5m", "$pool", ".*").Replace(expr)
	require.NotContains(t, out, "$", "%q uses a Grafana variable the test does not know", expr)
	return out
}

// selectorNames are the metric names of every vector selector in the
// expression.
func selectorNames(node parser.Node) []string {
	var names []string
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == "__name__" {
					name = m.Value
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

func datasourceUIDs(dash map[string]any) []string {
	var uids []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			if key == "datasource" {
				if uid, ok := v["uid"].(string); ok {
					uids = append(uids, uid)
				}
			}
			for k, c := range v {
				walk(c, k)
			}
		case []any:
			for _, c := range v {
				walk(c, key)
			}
		}
	}
	walk(dash, "")
	return uids
}

// exportedMetrics are the series names a real worker's registry exports:
// every described metric (vectors with no series yet included), with a
// histogram's _bucket, _sum and _count.
func exportedMetrics(t *testing.T) map[string]bool {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	mon := monitor.New()
	w, err := worker.Start(t.Context(), worker.Config{Conn: nc, Monitor: mon})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(t.Context()) })
	_, err = nc.Request("pharox.admin.pools.list", nil, natsTimeout)
	require.NoError(t, err) // one request: the histogram has a series

	names := map[string]bool{}
	descs := make(chan *prometheus.Desc)
	go func() { mon.Registry().Describe(descs); close(descs) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	families, err := mon.Registry().Gather()
	require.NoError(t, err)
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+suffix] = true
			}
		}
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("exported: %s", strings.Join(list, " "))
	return names
}
