package main

import (
	"context"
	"flag"
	"io"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/serveropts"
)

// clusterComposeFile is the override that runs docker-compose.yml on a
// 3-node NATS cluster.
const clusterComposeFile = "../../docker-compose.cluster.yml"

// loadComposeFiles loads compose files merged in order, as
// `docker compose -f a -f b` does.
func loadComposeFiles(t *testing.T, paths ...string) *types.Project {
	t.Helper()
	var files []types.ConfigFile
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		require.NoError(t, err)
		files = append(files, types.ConfigFile{Filename: abs})
	}
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(files[0].Filename),
		ConfigFiles: files,
		Environment: maps.Clone(composeEnv),
	})
	require.NoError(t, err, "%v do not load as compose files", paths)
	return project
}

// natsNodeOptions reads a NATS service's options the way nats-server does
// (server.ConfigureOptions: its command-line flags over the configuration
// file given with -c), with the file read from where the service mounts
// it from and the variables the service sets.
func natsNodeOptions(t *testing.T, name string, svc types.ServiceConfig) *server.Options {
	t.Helper()
	conf, ok := natsFlag(svc.Command, "c", "config")
	require.True(t, ok, "service %q: no -c FILE: the server would run without pharox's roles", name)
	deploy, err := filepath.Abs(deployConfig)
	require.NoError(t, err)
	mountedFile(t, svc, conf, deploy)
	args := slices.Clone([]string(svc.Command))
	for i, a := range args {
		if a == conf && i > 0 {
			args[i] = deploy
		}
	}
	for name := range composeEnv {
		t.Setenv(name, "") // not the host's, nor another service's
	}
	for key, value := range svc.Environment {
		if value != nil {
			t.Setenv(key, *value)
		}
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fail := func() {
		t.Fatalf("service %q: its command %q asks nats-server for help or its version", name, []string(svc.Command))
	}
	opts, err := server.ConfigureOptions(fs, args[:len(args):len(args)], fail, fail, fail)
	require.NoError(t, err, "service %q: nats-server does not accept the command %q with %s", name, []string(svc.Command), deploy)
	// The checks nats-server makes of its options before it starts (a
	// JetStream cluster node needs a server name and a cluster name, ...).
	check := opts.Clone()
	check.StoreDir = t.TempDir()
	s, err := server.NewServer(check)
	require.NoError(t, err, "service %q: nats-server refuses its options", name)
	s.Shutdown()
	return opts
}

// TestDockerComposeCluster checks docker-compose.cluster.yml over
// docker-compose.yml: three NATS nodes that form one cluster (the same
// cluster name, routes naming every node, JetStream on each with its own
// store volume, pharox's roles), and three workers with --replicas 3
// --shards 3 that know every node and wait for all of them; Prometheus
// scrapes all three.
func TestDockerComposeCluster(t *testing.T) {
	project := loadComposeFiles(t, composeFile, clusterComposeFile)
	require.Equal(t, "pharox-cluster", project.Name, "%s: its own project name, so its volumes do not mix with the single server's", clusterComposeFile)

	var nodes []string
	for name, svc := range project.Services {
		if imageRepo(svc.Image) == "nats" {
			nodes = append(nodes, name)
		}
	}
	sort.Strings(nodes)
	require.Len(t, nodes, 3, "%s: want three NATS nodes, got %q", clusterComposeFile, nodes)

	clusterNames, serverNames, stores := map[string]bool{}, map[string]bool{}, map[string]string{}
	clusterPort := map[string]int{}
	routes := map[string][]string{} // node -> the hosts its routes name
	for _, name := range nodes {
		svc := project.Services[name]
		opts := natsNodeOptions(t, name, svc)
		require.True(t, opts.JetStream, "service %q: JetStream is off (-js)", name)
		require.NotEmpty(t, opts.StoreDir, "service %q: no JetStream store dir (-sd)", name)
		i := slices.IndexFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == filepath.Clean(opts.StoreDir) })
		require.NotEqual(t, -1, i, "service %q: store dir %s is not a volume", name, opts.StoreDir)
		vol := svc.Volumes[i]
		require.Equal(t, types.VolumeTypeVolume, vol.Type, "service %q: store dir %s should be a named volume", name, opts.StoreDir)
		for other, src := range stores {
			require.NotEqual(t, src, vol.Source, "services %q and %q share the store volume %q", name, other, src)
		}
		stores[name] = vol.Source
		require.True(t, serveropts.ClientAuthRequired(opts), "service %q: clients get in without a login", name)
		users := map[string]bool{}
		for _, u := range opts.Users {
			users[u.Username] = u.Password != ""
		}
		require.True(t, users["worker"], "service %q: no worker user with a password", name)

		require.NotEmpty(t, opts.ServerName, "service %q: a JetStream cluster node needs a server name (-n)", name)
		require.False(t, serverNames[opts.ServerName], "service %q: server name %q is taken by another node", name, opts.ServerName)
		serverNames[opts.ServerName] = true
		require.NotEmpty(t, opts.Cluster.Name, "service %q: no cluster name (--cluster_name)", name)
		clusterNames[opts.Cluster.Name] = true
		require.NotZero(t, opts.Cluster.Port, "service %q: no cluster listener (--cluster)", name)
		clusterPort[name] = opts.Cluster.Port
		for _, r := range opts.Routes {
			routes[name] = append(routes[name], r.Hostname()+":"+r.Port())
		}
		require.NotNil(t, svc.HealthCheck, "service %q: no healthcheck for the workers to wait on", name)
		require.Contains(t, strings.Join(svc.HealthCheck.Test, " "), "/healthz", "service %q", name)
		for _, p := range svc.Ports {
			require.NotEqual(t, uint32(opts.Cluster.Port), p.Target, "service %q: the cluster port has no login; do not publish it", name)
		}
	}
	require.Len(t, clusterNames, 1, "the nodes name different clusters: %v", keys(clusterNames))
	for _, name := range nodes {
		var want []string
		for _, other := range nodes {
			want = append(want, other+":"+strconv.Itoa(clusterPort[other]))
		}
		got := slices.Clone(routes[name])
		if !slices.Contains(got, name+":"+strconv.Itoa(clusterPort[name])) {
			got = append(got, name+":"+strconv.Itoa(clusterPort[name])) // a node need not route to itself
		}
		require.ElementsMatch(t, want, got, "service %q: its routes should name every node's cluster port", name)
	}

	var workers []string
	for name, svc := range project.Services {
		if svc.Build != nil && !isGateway(svc) {
			workers = append(workers, name)
		}
	}
	sort.Strings(workers)
	require.Len(t, workers, 3, "%s: want three workers, got %q", clusterComposeFile, workers)
	metrics := map[string]bool{}
	for _, name := range workers {
		svc := project.Services[name]
		cfg := composeWorkerConfig(t, name, svc)
		require.NoError(t, cfg.validate(), "service %q", name)
		require.Equal(t, 3, cfg.Replicas, "service %q: --replicas 3, so every bucket survives a node", name)
		require.Equal(t, 3, cfg.Shards, "service %q: --shards 3, one proxies stream leader per node", name)
		require.Equal(t, "worker", cfg.NATS.User, "service %q: log in as the worker role", name)
		require.NotEmpty(t, cfg.NATS.PasswordFile, "service %q: read the worker password from its secret (--nats-password-file)", name)
		require.True(t, slices.ContainsFunc(svc.Secrets, func(s types.ServiceSecretConfig) bool {
			return "/run/secrets/"+s.Source == cfg.NATS.PasswordFile
		}), "service %q: --nats-password-file %s is none of its secrets", name, cfg.NATS.PasswordFile)
		var hosts []string
		for _, raw := range strings.Split(cfg.NATS.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			require.NoError(t, err, "service %q", name)
			require.Contains(t, []string{"", "4222"}, u.Port(), "service %q: %s", name, raw)
			hosts = append(hosts, u.Hostname())
		}
		require.ElementsMatch(t, nodes, hosts, "service %q: --nats-url %q should list every node, to reconnect to another when its own goes", name, cfg.NATS.URL)
		for _, node := range nodes {
			requireWaitsForHealthy(t, name, svc, node)
		}
		if cfg.MetricsListen != "" && cfg.MetricsListen != "off" {
			_, port, err := net.SplitHostPort(cfg.MetricsListen)
			require.NoError(t, err)
			metrics[name+":"+port] = true
		}
	}
	require.Len(t, metrics, 3, "every worker serves its metrics (--metrics-listen)")

	prom := serviceOfImage(t, project, "prometheus")
	deployDir, err := filepath.Abs("../../deploy")
	require.NoError(t, err)
	promFile := mountedFile(t, prom, "/etc/prometheus/prometheus.yml", filepath.Join(deployDir, "prometheus", "prometheus.cluster.yml"))
	targets := scrapeTargets(t, promFile)
	require.Equal(t, keys(metrics), keys(targets), "%s scrapes other targets than the workers' metrics listeners", promFile)
}
