package main

import (
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/natsconn"
)

// pharoxBinary is where the Dockerfile puts the pharox command line.
const pharoxBinary = "/usr/local/bin/pharox"

// isGateway reports whether a service runs `pharox gateway`.
func isGateway(svc types.ServiceConfig) bool {
	return slices.Equal([]string(svc.Entrypoint), []string{pharoxBinary, "gateway"})
}

// rootFlags are the flags every pharox command takes besides the NATS
// connection's (declared by cmd/pharox's root command, which this package
// cannot import), with their environment twins.
var rootFlags = map[string]string{
	"subject-prefix": "PHAROX_SUBJECT_PREFIX",
	"timeout":        "PHAROX_TIMEOUT",
}

// gatewayFlags is the flag set of `pharox gateway`: its own, the NATS
// connection's (natsconn, as the root command declares them) and the rest
// of the root's.
func gatewayFlags(cfg *gateway.Config, conn *natsconn.Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("gateway", pflag.ContinueOnError)
	cfg.AddFlags(fs)
	conn.AddFlags(fs, natsconn.WithContextFlag())
	for name := range rootFlags {
		fs.String(name, "", "")
	}
	return fs
}

// gatewayEnvNames maps every PHAROX_* variable `pharox gateway` reads to
// its flag.
func gatewayEnvNames() map[string]string {
	names := map[string]string{gateway.TokensEnv: ""}
	var cfg gateway.Config
	fs := pflag.NewFlagSet("gateway", pflag.ContinueOnError)
	cfg.AddFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) { names[gateway.EnvName(f.Name)] = f.Name })
	for flag, env := range rootFlags {
		names[env] = flag
	}
	var conn natsconn.Config
	cfs := pflag.NewFlagSet("conn", pflag.ContinueOnError)
	conn.AddFlags(cfs, natsconn.WithContextFlag())
	cfs.VisitAll(func(f *pflag.Flag) { names[natsconn.EnvName(f.Name)] = f.Name })
	names[natsconn.EnvPassword], names[natsconn.EnvToken] = "", ""
	return names
}

func checkGateway(t *testing.T, name string, svc types.ServiceConfig, natsName, repoRoot string) {
	require.Equal(t, repoRoot, svc.Build.Context, "service %q: build context should be the repository root (build: .)", name)
	docker, err := os.ReadFile(dockerfile)
	require.NoError(t, err)
	require.Contains(t, string(docker), "./cmd/pharox", "service %q runs %s, but %s does not build ./cmd/pharox", name, pharoxBinary, dockerfile)

	env := map[string]string{}
	for key, value := range svc.Environment {
		if value != nil {
			env[key] = *value
		}
	}
	getenv := func(k string) string { return env[k] }
	var cfg gateway.Config
	var conn natsconn.Config
	fs := gatewayFlags(&cfg, &conn)
	cmd := []string(svc.Command)
	require.NoError(t, fs.Parse(cmd), "service %q: command %q does not parse with the gateway's flags", name, cmd)
	require.Zero(t, fs.NArg(), "service %q: command %q leaves positional arguments %q", name, cmd, fs.Args())
	require.NoError(t, cfg.ApplyEnv(fs, getenv), "service %q: its PHAROX_GATEWAY_* environment", name)
	require.NoError(t, cfg.Validate(getenv), "service %q: command %q with its environment is not a valid gateway configuration", name, cmd)

	conn.LoadEnv(getenv)
	natsURL := conn.URL
	require.NotEmpty(t, natsURL, "service %q: no --nats-url (or PHAROX_NATS_URL); the gateway would look for NATS on its own localhost", name)
	for _, raw := range strings.Split(natsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		require.NoError(t, err)
		require.Equal(t, natsName, u.Hostname(), "service %q: --nats-url %q should point at the compose service %q", name, raw, natsName)
	}
	// It logs in as a leaser, on the inbox prefix that user may read, with a
	// password from a mounted secret (never a flag).
	require.Equal(t, "leaser", conn.User, "service %q: should log in as the leaser user", name)
	require.Equal(t, "_INBOX_leaser", conn.InboxPrefix, "service %q: the leaser may only read replies on _INBOX_leaser", name)
	require.True(t, strings.HasPrefix(conn.PasswordFile, "/run/secrets/"), "service %q: the password should come from a compose secret, got %q", name, conn.PasswordFile)
	require.NotEmpty(t, svc.Secrets, "service %q: mounts no secret", name)
	requireWaitsForHealthy(t, name, svc, natsName)

	if cfg.TokenFile != "" {
		vol := requireReadOnlyMount(t, name, svc, "--token-file", cfg.TokenFile)
		if vol.Type == types.VolumeTypeBind {
			// The file the container will read must hold tokens.
			local := cfg
			local.TokenFile = vol.Source
			ts, err := local.LoadTokens(getenv)
			require.NoError(t, err, "service %q: token file %s", name, vol.Source)
			require.Positive(t, ts.Len())
		}
	}

	// Every address it listens on off loopback is published.
	for _, addr := range []string{cfg.Listen, cfg.SOCKSListen} {
		if addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		require.NotContains(t, []string{"127.0.0.1", "localhost", "::1"}, host,
			"service %q: %s listens on loopback inside the container, where no other container or host can reach it", name, addr)
		p, err := strconv.Atoi(port)
		require.NoError(t, err)
		published := slices.ContainsFunc(svc.Ports, func(pc types.ServicePortConfig) bool { return int(pc.Target) == p })
		require.True(t, published, "service %q: port %d (%s) is not in ports:", name, p, addr)
	}
	require.NotNil(t, svc.StopGracePeriod, "service %q: no stop_grace_period; docker's 10 s default cuts --drain-timeout %s short", name, cfg.DrainTimeout)
	require.GreaterOrEqual(t, int64(*svc.StopGracePeriod), int64(cfg.DrainTimeout), "service %q: stop_grace_period is shorter than --drain-timeout", name)
}
