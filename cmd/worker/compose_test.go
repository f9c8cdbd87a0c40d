package main

import (
	"bufio"
	"context"
	"flag"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/serveropts"
	"github.com/pharox/pharox-nats/natsconn"
)

// Paths relative to this package directory (go test runs in cmd/worker).
const (
	composeFile = "../../docker-compose.yml"
	dockerfile  = "../../Dockerfile"
	// deployConfig (security_test.go) is ../../deploy/nats-server.conf.
)

// composeEnv is the environment the compose file is loaded with: the NATS
// passwords it requires (the README has the user export them), and nothing
// of the host's, so the host's variables cannot change the result.
var composeEnv = map[string]string{
	"NATS_WORKER_PASSWORD": "compose-test-worker",
	"NATS_ADMIN_PASSWORD":  "compose-test-admin",
	"NATS_LEASER_PASSWORD": "compose-test-leaser",
	// Grafana's admin (compose_monitor_test.go).
	"GRAFANA_ADMIN_PASSWORD": "compose-test-grafana",
}

// loadCompose parses and validates a compose file the way docker compose
// does (schema validation, normalization, relative paths made absolute).
func loadCompose(t *testing.T, path string) *types.Project {
	t.Helper()
	project, err := loadComposeEnv(path, composeEnv)
	require.NoError(t, err, "%s does not load as a compose file", path)
	return project
}

func loadComposeEnv(path string, env map[string]string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: maps.Clone(env), // the loader adds COMPOSE_PROJECT_NAME to it
	}, func(o *loader.Options) {
		// Without a project name (from here or a top-level `name:`) the
		// loader refuses the file.
		o.SetProjectName("pharox-compose-test", true)
	})
}

// imageRepo is the repository part of an image reference: "nats" for
// "nats:2.15-alpine" and "docker.io/library/nats:2.15".
func imageRepo(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image[strings.LastIndex(image, "/")+1:]
}

// natsFlag returns the value of a nats-server flag in args (Go flag syntax:
// -name value, --name value, -name=value) and whether it is present.
func natsFlag(args []string, names ...string) (string, bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !slices.Contains(names, name) {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return "", false
}

// flagEnvNames maps every PHAROX_* variable the worker reads to its flag;
// the secrets have a variable and no flag.
func flagEnvNames() map[string]string {
	var cfg config
	names := map[string]string{natsconn.EnvPassword: "", natsconn.EnvToken: ""}
	newFlagSet(&cfg).VisitAll(func(f *flag.Flag) { names[envName(f.Name)] = f.Name })
	return names
}

func TestDockerCompose(t *testing.T) {
	project := loadCompose(t, composeFile)
	repoRoot, err := filepath.Abs(filepath.Dir(composeFile))
	require.NoError(t, err)
	envNames := flagEnvNames()

	t.Run("passwords are required", func(t *testing.T) {
		// No default password: without them compose refuses to start.
		for name := range composeEnv {
			env := maps.Clone(composeEnv)
			delete(env, name)
			_, err := loadComposeEnv(composeFile, env)
			require.ErrorContains(t, err, name, "%s: loads without %s; the passwords must not have defaults", composeFile, name)
		}
	})

	// The NATS server: the one service running a nats image.
	var natsName string
	var natsSvc types.ServiceConfig
	for name, svc := range project.Services {
		if imageRepo(svc.Image) == "nats" {
			require.Empty(t, natsName, "%s: more than one service runs a nats image (%q and %q); the workers need one server to point at", composeFile, natsName, name)
			natsName, natsSvc = name, svc
		}
	}
	require.NotEmpty(t, natsName, "%s: no service runs a nats image (e.g. image: nats:2.15-alpine)", composeFile)

	t.Run("nats", func(t *testing.T) {
		_, js := natsFlag(natsSvc.Command, "js", "jetstream")
		require.True(t, js, "service %q: JetStream is not enabled; its command %q needs -js (or --jetstream): the workers keep all their state in JetStream", natsName, []string(natsSvc.Command))
		if dir, ok := natsFlag(natsSvc.Command, "sd", "store_dir"); ok {
			mounted := slices.ContainsFunc(natsSvc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == filepath.Clean(dir) })
			require.True(t, mounted, "service %q: JetStream store dir %q is not a mounted volume, so all leases are lost when the container is recreated", natsName, dir)
		}
		require.NotNil(t, natsSvc.HealthCheck, "service %q: no healthcheck, so workers cannot wait for it with condition: service_healthy", natsName)
		require.False(t, natsSvc.HealthCheck.Disable, "service %q: healthcheck is disabled", natsName)
		require.Contains(t, strings.Join(natsSvc.HealthCheck.Test, " "), "/healthz", "service %q: healthcheck should probe the monitoring endpoint /healthz?js-enabled-only=true", natsName)
		_, monitoring := natsFlag(natsSvc.Command, "m", "http_port")
		require.True(t, monitoring, "service %q: the healthcheck probes the monitoring port but the command %q does not enable it with -m 8222", natsName, []string(natsSvc.Command))
		for _, p := range natsSvc.Ports {
			if p.Target == 8222 && p.Published != "" {
				require.Contains(t, []string{"127.0.0.1", "::1", "localhost"}, p.HostIP, "service %q: the monitoring port is published to other machines; bind it to 127.0.0.1", natsName)
			}
		}
	})

	// The server runs with pharox's roles: the deploy configuration is
	// mounted, loads with the server's own parser from the variables the
	// service sets, and requires a login.
	var natsUsers map[string]string // user -> password the server expects
	t.Run("nats roles", func(t *testing.T) {
		conf, ok := natsFlag(natsSvc.Command, "c", "config")
		require.True(t, ok, "service %q: no -c FILE: the server would run without pharox's roles and accept anyone", natsName)
		i := slices.IndexFunc(natsSvc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == conf })
		require.NotEqual(t, -1, i, "service %q: the configuration %q is not mounted into the container", natsName, conf)
		vol := natsSvc.Volumes[i]
		require.True(t, vol.ReadOnly, "service %q: mount the configuration read-only", natsName)
		require.Equal(t, types.VolumeTypeBind, vol.Type)
		deploy, err := filepath.Abs(deployConfig)
		require.NoError(t, err)
		require.Equal(t, deploy, vol.Source, "service %q: mount the shipped deploy/nats-server.conf", natsName)

		for key, value := range natsSvc.Environment {
			if value != nil {
				t.Setenv(key, *value)
			}
		}
		for name := range composeEnv {
			if _, set := natsSvc.Environment[name]; !set {
				t.Setenv(name, "") // the parser must not find it in the host's environment
				require.NoError(t, os.Unsetenv(name))
			}
		}
		opts, err := server.ProcessConfigFile(vol.Source)
		require.NoError(t, err, "service %q: %s does not load with the variables the service sets", natsName, vol.Source)
		require.True(t, serveropts.ClientAuthRequired(opts), "service %q: the configuration lets clients in without a login", natsName)
		natsUsers = map[string]string{}
		for _, u := range opts.Users {
			natsUsers[u.Username] = u.Password
		}
		require.Contains(t, natsUsers, "worker")
	})

	// The workers: every service built from this repository that runs the
	// image's entrypoint (the worker); the gateways run `pharox gateway`.
	var workers, gateways []string
	for name, svc := range project.Services {
		switch {
		case svc.Build != nil && isGateway(svc):
			gateways = append(gateways, name)
		case svc.Build != nil:
			workers = append(workers, name)
		}
	}
	sort.Strings(workers)
	sort.Strings(gateways)
	require.GreaterOrEqual(t, len(workers), 2, "%s: want at least two worker services built from the Dockerfile (build: .), got %q", composeFile, workers)

	for _, name := range workers {
		svc := project.Services[name]
		t.Run(name, func(t *testing.T) {
			require.Equal(t, repoRoot, svc.Build.Context, "service %q: build context should be the repository root (build: .)", name)
			require.Equal(t, "Dockerfile", svc.Build.Dockerfile, "service %q: should be built from the repository's Dockerfile", name)
			require.Empty(t, svc.Entrypoint, "service %q: entrypoint is overridden; the image's ENTRYPOINT is the worker binary and command: holds only its flags", name)

			// The environment first, then the command line: the worker's own
			// order, in which a flag wins over its PHAROX_* twin.
			var cfg config
			fs := newFlagSet(&cfg)
			fs.SetOutput(io.Discard)
			for key, value := range svc.Environment {
				if !strings.HasPrefix(key, "PHAROX_") || value == nil {
					continue
				}
				flagName, ok := envNames[key]
				require.True(t, ok, "service %q: environment variable %s names no worker flag", name, key)
				require.NoError(t, fs.Set(flagName, *value), "service %q: %s=%q is not a valid --%s", name, key, *value, flagName)
			}
			cmd := []string(svc.Command)
			require.NoError(t, fs.Parse(cmd), "service %q: command %q does not parse with the worker's flags", name, cmd)
			require.Zero(t, fs.NArg(), "service %q: command %q leaves positional arguments %q; the worker takes only flags (and the image's ENTRYPOINT already is the worker)", name, cmd, fs.Args())
			require.NoError(t, cfg.validate(), "service %q: command %q with its PHAROX_* environment is not a valid worker configuration", name, cmd)

			require.NotEmpty(t, cfg.NATS.URL, "service %q: no --nats-url (or PHAROX_NATS_URL), so it would start its own embedded server instead of joining %q", name, natsName)

			// It logs in as `worker` with the password the server expects,
			// read from a secret file or the environment.
			require.Equal(t, "worker", cfg.NATS.User, "service %q: log in as the worker role (--nats-user worker)", name)
			var password string
			if cfg.NATS.PasswordFile != "" {
				i := slices.IndexFunc(svc.Secrets, func(s types.ServiceSecretConfig) bool {
					target := s.Target
					if target == "" {
						target = "/run/secrets/" + s.Source
					} else if !filepath.IsAbs(target) {
						target = "/run/secrets/" + target
					}
					return target == cfg.NATS.PasswordFile
				})
				require.NotEqual(t, -1, i, "service %q: --nats-password-file %s is none of its secrets", name, cfg.NATS.PasswordFile)
				secret, ok := project.Secrets[svc.Secrets[i].Source]
				require.True(t, ok, "service %q: secret %q is not defined", name, svc.Secrets[i].Source)
				require.NotEmpty(t, secret.Environment, "service %q: secret %q should come from a variable (environment:)", name, svc.Secrets[i].Source)
				password = composeEnv[secret.Environment]
			} else if v := svc.Environment[natsconn.EnvPassword]; v != nil {
				password = *v
			}
			require.NotEmpty(t, password, "service %q: no password: give --nats-password-file (a secret) or %s", name, natsconn.EnvPassword)
			require.Equal(t, natsUsers["worker"], password, "service %q: its password is not the one the server expects for worker", name)
			for _, raw := range strings.Split(cfg.NATS.URL, ",") {
				u, err := url.Parse(strings.TrimSpace(raw))
				require.NoError(t, err, "service %q: --nats-url %q", name, cfg.NATS.URL)
				require.Equal(t, natsName, u.Hostname(), "service %q: --nats-url %q should point at the compose service %q", name, raw, natsName)
				require.Contains(t, []string{"", "4222"}, u.Port(), "service %q: --nats-url %q should use the NATS client port 4222", name, raw)
			}

			requireWaitsForHealthy(t, name, svc, natsName)

			if cfg.Seed != "" {
				seed := requireReadOnlyMount(t, name, svc, "--seed", cfg.Seed)
				if seed.Type == types.VolumeTypeBind {
					info, err := os.Stat(seed.Source)
					require.NoError(t, err, "service %q: seed file %q to mount at %s is missing; docker compose would refuse to start (or mount an empty directory)", name, seed.Source, cfg.Seed)
					require.True(t, info.Mode().IsRegular(), "service %q: seed file source %q is not a regular file", name, seed.Source)
				}
			}
		})
	}

	require.NotEmpty(t, gateways, "%s: no gateway service (build: . with entrypoint [\"%s\", \"gateway\"])", composeFile, pharoxBinary)
	for _, name := range gateways {
		t.Run(name, func(t *testing.T) { checkGateway(t, name, project.Services[name], natsName, repoRoot) })
	}

	t.Run("environment", func(t *testing.T) {
		for name, svc := range project.Services {
			names := envNames
			if isGateway(svc) {
				names = gatewayEnvNames()
			}
			for key := range svc.Environment {
				if strings.HasPrefix(key, "PHAROX_") {
					_, ok := names[key]
					require.True(t, ok, "service %q: environment variable %s names no flag of the command it runs", name, key)
				}
			}
		}
	})
}

// TestDockerfile checks the build the compose file relies on.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(dockerfile)
	require.NoError(t, err)
	defer f.Close()

	// Logical instructions: comments dropped, continuation lines joined.
	var instructions []string
	var current strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && current.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			current.WriteString(cont + " ")
			continue
		}
		current.WriteString(line)
		if s := strings.TrimSpace(current.String()); s != "" {
			instructions = append(instructions, s)
		}
		current.Reset()
	}
	require.NoError(t, sc.Err())

	keyword := func(ins string) string { k, _, _ := strings.Cut(ins, " "); return strings.ToUpper(k) }
	lastFrom := -1
	builds, cgoOff := false, false
	for i, ins := range instructions {
		fields := strings.Fields(ins)
		switch keyword(ins) {
		case "FROM":
			lastFrom = i
		case "RUN":
			if strings.Contains(ins, "go build") && slices.Contains(fields, "./cmd/worker") {
				builds = true
			}
		}
		if slices.ContainsFunc(fields, func(f string) bool { return strings.TrimPrefix(f, "CGO_ENABLED=") == "0" && f != "0" }) {
			cgoOff = true
		}
	}
	require.True(t, builds, "%s: no RUN go build ... ./cmd/worker", dockerfile)
	require.True(t, cgoOff, "%s: CGO_ENABLED=0 is not set; the final image has no libc", dockerfile)
	require.Greater(t, lastFrom, 0, "%s: want a multi-stage build (a build stage and a small final stage)", dockerfile)

	final := instructions[lastFrom:]
	var user, entrypoint string
	if strings.Contains(final[0], ":nonroot") { // distroless nonroot images default to USER nonroot
		user = "nonroot"
	}
	for _, ins := range final {
		switch keyword(ins) {
		case "USER":
			user = strings.TrimSpace(ins[len("USER"):])
		case "ENTRYPOINT":
			entrypoint = strings.TrimSpace(ins[len("ENTRYPOINT"):])
		}
	}
	require.NotEmpty(t, entrypoint, "%s: the final stage has no ENTRYPOINT; the compose services pass only flags", dockerfile)
	require.Contains(t, entrypoint, "worker", "%s: ENTRYPOINT %s should run the worker binary", dockerfile, entrypoint)
	userName, _, _ := strings.Cut(user, ":")
	require.NotContains(t, []string{"", "root", "0"}, userName, "%s: the final stage should run as a non-root USER", dockerfile)
}

// requireWaitsForHealthy fails unless service name (svc) depends on the
// service dep with condition service_healthy: started sooner, it races
// the NATS server's start.
func requireWaitsForHealthy(t *testing.T, name string, svc types.ServiceConfig, dep string) {
	t.Helper()
	d, ok := svc.DependsOn[dep]
	require.True(t, ok, "service %q: does not depend on %q (depends_on)", name, dep)
	require.Equal(t, types.ServiceConditionHealthy, d.Condition, "service %q: should wait for %q with condition: service_healthy, or it races the server's start", name, dep)
}

// requireReadOnlyMount returns the volume of service name (svc) mounted at
// target, the file its flag names, and fails unless there is one and it is
// read-only.
func requireReadOnlyMount(t *testing.T, name string, svc types.ServiceConfig, flag, target string) types.ServiceVolumeConfig {
	t.Helper()
	i := slices.IndexFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == target })
	require.NotEqual(t, -1, i, "service %q: %s %q is not mounted into the container", name, flag, target)
	vol := svc.Volumes[i]
	require.True(t, vol.ReadOnly, "service %q: the file of %s %q should be mounted read-only", name, flag, target)
	return vol
}
