package main

import (
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/natsconn"
)

// TestComposeMonitoring checks the monitoring wiring of docker-compose.yml:
// every worker and gateway serves its metrics on an address Prometheus
// reaches; Prometheus runs with the shipped scrape configuration, which
// targets every worker and gateway at its metrics port and nothing else; Grafana gets the
// provisioning and the dashboard, its datasource points at the Prometheus
// service, and both publish their ports on this machine only.
func TestComposeMonitoring(t *testing.T) {
	project := loadCompose(t, composeFile)
	deployDir, err := filepath.Abs("../../deploy")
	require.NoError(t, err)

	// Where each worker and gateway serves /metrics, as the worker (or
	// `pharox gateway`) reads its command and PHAROX_* environment.
	want := map[string]bool{}
	gateways := 0
	for name, svc := range project.Services {
		if svc.Build == nil {
			continue
		}
		var addr string
		if isGateway(svc) {
			gateways++
			addr = composeGatewayMetrics(t, name, svc)
			require.NotContains(t, []string{"", "off"}, addr, "service %q: no --metrics-listen (or PHAROX_GATEWAY_METRICS_LISTEN): the gateway's metrics are off by default and Prometheus scrapes nothing of it", name)
		} else {
			addr = composeWorkerConfig(t, name, svc).MetricsListen
			require.NotContains(t, []string{"", "off"}, addr, "service %q: no --metrics-listen (or PHAROX_METRICS_LISTEN): with --nats-url metrics are off by default and Prometheus scrapes nothing", name)
		}
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		require.Contains(t, []string{"", "0.0.0.0", "::"}, host, "service %q: --metrics-listen %s is not reachable from the Prometheus container", name, addr)
		want[name+":"+port] = true
		for _, p := range svc.Ports {
			require.NotEqual(t, port, p.Target, "service %q: the metrics port has no login; do not publish it", name)
		}
	}
	require.GreaterOrEqual(t, len(want), 2+gateways)

	prom := serviceOfImage(t, project, "prometheus")
	configPath := "/etc/prometheus/prometheus.yml"
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			configPath = v
		}
	}
	promFile := mountedFile(t, prom, configPath, filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	got := scrapeTargets(t, promFile)
	require.Equal(t, keys(want), keys(got), "%s scrapes other targets than the workers' and gateways' metrics listeners", promFile)
	requireLocalPorts(t, "prometheus", prom)

	graf := serviceOfImage(t, project, "grafana")
	requireLocalPorts(t, "grafana", graf)
	require.NotNil(t, graf.Environment["GF_SECURITY_ADMIN_PASSWORD"], "grafana: set its admin password (no default admin/admin)")
	mountedFile(t, graf, "/etc/grafana/provisioning", filepath.Join(deployDir, "grafana", "provisioning"))
	var dsCfg struct {
		Datasources []struct {
			UID string `yaml:"uid"`
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(deployDir, "grafana", "provisioning", "datasources", "prometheus.yaml"), &dsCfg)
	require.Len(t, dsCfg.Datasources, 1)
	promName := ""
	for name, svc := range project.Services {
		if imageRepo(svc.Image) == "prometheus" {
			promName = name
		}
	}
	require.Equal(t, "http://"+promName+":9090", dsCfg.Datasources[0].URL, "the datasource should point at the Prometheus service")

	var dashCfg struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(deployDir, "grafana", "provisioning", "dashboards", "pharox.yaml"), &dashCfg)
	require.Len(t, dashCfg.Providers, 1)
	dir := mountedFile(t, graf, dashCfg.Providers[0].Options.Path, filepath.Join(deployDir, "grafana", "dashboards"))
	_, err = os.Stat(filepath.Join(dir, "pharox.json"))
	require.NoError(t, err, "the dashboard is not in the mounted directory")
}

// composeGatewayMetrics is a gateway service's --metrics-listen, read as
// `pharox gateway` reads it: its command, then its PHAROX_GATEWAY_*
// environment.
func composeGatewayMetrics(t *testing.T, name string, svc types.ServiceConfig) string {
	env := map[string]string{}
	for key, value := range svc.Environment {
		if value != nil {
			env[key] = *value
		}
	}
	var cfg gateway.Config
	var conn natsconn.Config
	fs := gatewayFlags(&cfg, &conn)
	fs.SetOutput(io.Discard)
	require.NoError(t, fs.Parse(svc.Command), "service %q", name)
	require.NoError(t, cfg.ApplyEnv(fs, func(k string) string { return env[k] }), "service %q", name)
	return cfg.MetricsListen
}

// composeWorkerConfig reads a worker service's configuration the way the
// worker does: its PHAROX_* environment, then its command.
func composeWorkerConfig(t *testing.T, name string, svc types.ServiceConfig) config {
	var cfg config
	fs := newFlagSet(&cfg)
	fs.SetOutput(io.Discard)
	names := flagEnvNames()
	for key, value := range svc.Environment {
		if flagName := names[key]; flagName != "" && value != nil {
			require.NoError(t, fs.Set(flagName, *value), "service %q: %s", name, key)
		}
	}
	require.NoError(t, fs.Parse(svc.Command), "service %q", name)
	require.NoError(t, cfg.validateMetrics(), "service %q", name)
	return cfg
}

func serviceOfImage(t *testing.T, project *types.Project, repo string) types.ServiceConfig {
	for _, svc := range project.Services {
		if imageRepo(svc.Image) == repo {
			return svc
		}
	}
	t.Fatalf("%s: no service runs a %s image", composeFile, repo)
	return types.ServiceConfig{}
}

// mountedFile checks that target is a read-only bind mount of source and
// returns source.
func mountedFile(t *testing.T, svc types.ServiceConfig, target, source string) string {
	i := slices.IndexFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == target })
	require.NotEqual(t, -1, i, "service %q: nothing is mounted at %s", svc.Name, target)
	v := svc.Volumes[i]
	require.Equal(t, types.VolumeTypeBind, v.Type)
	require.True(t, v.ReadOnly, "service %q: mount %s read-only", svc.Name, target)
	require.Equal(t, source, v.Source, "service %q: %s should be the shipped %s", svc.Name, target, source)
	_, err := os.Stat(source)
	require.NoError(t, err)
	return source
}

func requireLocalPorts(t *testing.T, name string, svc types.ServiceConfig) {
	require.NotEmpty(t, svc.Ports, "service %q publishes no port", name)
	for _, p := range svc.Ports {
		require.Contains(t, []string{"127.0.0.1", "::1", "localhost"}, p.HostIP, "service %q: port %d is published to other machines and has no TLS; bind it to 127.0.0.1", name, p.Target)
	}
}

func readYAML(t *testing.T, path string, v any) {
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, v), path)
}

// keys is m's keys in order.
func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// scrapeTargets is the set of static targets of a Prometheus configuration.
func scrapeTargets(t *testing.T, promFile string) map[string]bool {
	t.Helper()
	var promCfg struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, promFile, &promCfg)
	got := map[string]bool{}
	for _, sc := range promCfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				got[target] = true
			}
		}
	}
	return got
}
