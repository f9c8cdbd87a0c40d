package natsconn_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/natsconn"
)

// cliConfig parses args the way the pharox CLI declares its flags.
func cliConfig(t *testing.T, envs map[string]string, args ...string) natsconn.Config {
	t.Helper()
	var c natsconn.Config
	fs := pflag.NewFlagSet("pharox", pflag.ContinueOnError)
	c.AddFlags(fs, natsconn.WithContextFlag(), natsconn.WithEnvDefaults(env(envs)))
	require.NoError(t, fs.Parse(args))
	c.LoadEnv(env(envs))
	return c
}

func writeContext(t *testing.T, home, name, body string) {
	t.Helper()
	dir := filepath.Join(home, "nats", "context")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	authtest.WriteFile(t, dir, name+".json", body)
}

func TestNatsContext(t *testing.T) {
	srv := authtest.RunServer(t, &server.Options{Users: []*server.User{{Username: "ctxuser", Password: "ctx-pw"}, {Username: "other", Password: "other-pw"}}})
	xdg := t.TempDir()
	writeContext(t, xdg, "prod", `{"description":"test","url":"`+srv.ClientURL()+`","user":"ctxuser","password":"ctx-pw","inbox_prefix":"_INBOX_ctx"}`)
	writeContext(t, xdg, "viaenv", `{"url":"`+srv.ClientURL()+`","user":"ctxuser","password":"env://CTX_PW"}`)
	writeContext(t, xdg, "domain", `{"url":"`+srv.ClientURL()+`","jetstream_domain":"hub"}`)
	writeContext(t, xdg, "onepassword", `{"url":"`+srv.ClientURL()+`","user":"u","password":"op://vault/item/pw"}`)
	envs := map[string]string{"XDG_CONFIG_HOME": xdg}

	connectWith := func(c natsconn.Config) (natsconn.Settings, error) {
		s, err := c.Resolve()
		if err != nil {
			return s, err
		}
		nc, err := s.Connect(nats.NoReconnect())
		if err == nil {
			nc.Close()
		}
		return s, err
	}

	t.Run("no context selected: the default URL", func(t *testing.T) {
		s, err := cliConfig(t, envs).Resolve()
		require.NoError(t, err)
		require.Empty(t, s.URL)
		require.Empty(t, s.Context)
	})

	authtest.WriteFile(t, filepath.Join(xdg, "nats"), "context.txt", "prod\n")
	t.Run("the selected context needs no flags", func(t *testing.T) {
		s, err := connectWith(cliConfig(t, envs))
		require.NoError(t, err)
		require.Equal(t, "prod", s.Context)
		require.Equal(t, srv.ClientURL(), s.URL)
		require.Equal(t, "_INBOX_ctx", s.InboxPrefix)
		require.Equal(t, `user "ctxuser" (password from nats context "prod")`, s.Login)
	})
	t.Run("HOME/.config when XDG_CONFIG_HOME is unset", func(t *testing.T) {
		home := t.TempDir()
		require.NoError(t, os.Symlink(xdg, filepath.Join(home, ".config")))
		s, err := cliConfig(t, map[string]string{"HOME": home}).Resolve()
		require.NoError(t, err)
		require.Equal(t, "prod", s.Context)
	})
	t.Run("an explicit URL ignores the selected context", func(t *testing.T) {
		s, err := cliConfig(t, envs, "--nats-url", srv.ClientURL()).Resolve()
		require.NoError(t, err)
		require.Empty(t, s.Context)
		require.Equal(t, "no login", s.Login)
	})
	t.Run("flags override the context, the login as a whole", func(t *testing.T) {
		e := map[string]string{"XDG_CONFIG_HOME": xdg, natsconn.EnvPassword: "other-pw"}
		s, err := connectWith(cliConfig(t, e, "--context", "prod", "--nats-user", "other", "--inbox-prefix", "_INBOX_other"))
		require.NoError(t, err)
		require.Equal(t, "_INBOX_other", s.InboxPrefix)
		require.Contains(t, s.Login, `user "other" (password from PHAROX_NATS_PASSWORD)`)
	})
	t.Run("--context by name, password from env://", func(t *testing.T) {
		e := map[string]string{"XDG_CONFIG_HOME": xdg, "CTX_PW": "ctx-pw"}
		s, err := connectWith(cliConfig(t, e, "--context", "viaenv"))
		require.NoError(t, err)
		require.Equal(t, "viaenv", s.Context)
		e["CTX_PW"] = "wrong"
		_, err = connectWith(cliConfig(t, e, "--context", "viaenv"))
		require.ErrorIs(t, err, natsconn.ErrLoginRefused)
	})
	t.Run("PHAROX_CONTEXT", func(t *testing.T) {
		e := map[string]string{"XDG_CONFIG_HOME": xdg, "PHAROX_CONTEXT": "missing"}
		_, err := cliConfig(t, e).Resolve()
		require.ErrorContains(t, err, `context "missing": `+filepath.Join(xdg, "nats", "context", "missing.json")+" does not exist")
	})
	t.Run("unsupported settings are refused, not half applied", func(t *testing.T) {
		_, err := cliConfig(t, envs, "--context", "domain").Resolve()
		require.ErrorContains(t, err, `context "domain" sets jetstream_domain, which pharox does not support`)
		_, err = cliConfig(t, envs, "--context", "onepassword").Resolve()
		require.ErrorContains(t, err, "op: references are not supported")
	})
	t.Run("the worker has no contexts", func(t *testing.T) {
		c := natsconn.Config{}
		c.LoadEnv(env(envs))
		s, err := c.Resolve()
		require.NoError(t, err)
		require.Empty(t, s.Context)
	})
}
