package serveropts_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/internal/serveropts"
)

// deployConfig is the sample configuration shipped with the repository.
const deployConfig = "../../deploy/nats-server.conf"

func setDeployPasswords(t *testing.T) {
	t.Setenv("NATS_WORKER_PASSWORD", "w")
	t.Setenv("NATS_ADMIN_PASSWORD", "a")
	t.Setenv("NATS_LEASER_PASSWORD", "l")
}

func TestListenExposure(t *testing.T) {
	base := serveropts.Config{Listen: "127.0.0.1:4222", DataDir: "/tmp/x"}
	for _, listen := range []string{"127.0.0.1:4222", "127.0.0.2:1", "localhost:4222", "[::1]:4222"} {
		c := base
		c.Listen, c.ListenSet = listen, true
		_, err := serveropts.Options(c)
		require.NoError(t, err, listen)
	}
	for _, listen := range []string{"0.0.0.0:4222", ":4222", "[::]:4222", "192.0.2.7:4222", "myhost:4222"} {
		c := base
		c.Listen, c.ListenSet = listen, true
		_, err := serveropts.Options(c)
		require.ErrorContains(t, err, "reachable from other machines and the embedded NATS server asks no login", listen)
		require.ErrorContains(t, err, "--nats-config FILE with users and permissions (deploy/nats-server.conf", listen)
	}

	// The shipped roles require a login, so any address is fine.
	setDeployPasswords(t)
	c := base
	c.File, c.Listen, c.ListenSet = deployConfig, "0.0.0.0:4222", true
	opts, err := serveropts.Options(c)
	require.NoError(t, err)
	require.True(t, serveropts.ClientAuthRequired(opts))
	require.Equal(t, "0.0.0.0", opts.Host)

	dir := t.TempDir()
	for name, conf := range map[string]string{
		"no_auth_user lets anyone in": `listen: 0.0.0.0:4222
authorization { users: [{user: a, password: b}] }
no_auth_user: a`,
		"no authorization at all": `port: 4222`,
		"websocket without login": `listen: 127.0.0.1:4222
websocket { listen: "0.0.0.0:8080", no_tls: true }`,
		"leaf nodes without login": `listen: 127.0.0.1:4222
leafnodes { listen: "0.0.0.0:7422" }`,
	} {
		_, err := serveropts.Options(serveropts.Config{File: authtest.WriteFile(t, dir, "c.conf", conf), Listen: "127.0.0.1:4222", DataDir: dir})
		require.ErrorContains(t, err, "refusing to", name)
	}
	_, err = serveropts.Options(serveropts.Config{File: authtest.WriteFile(t, dir, "ok.conf", `listen: 127.0.0.1:4222
websocket { listen: "0.0.0.0:8080", no_tls: true }
authorization { users: [{user: a, password: b}] }`), DataDir: dir})
	require.NoError(t, err, "a websocket listener with the server's users is fine")
}

func TestFileAndFlagsCombine(t *testing.T) {
	dir := t.TempDir()
	file := authtest.WriteFile(t, dir, "c.conf", `listen: 127.0.0.1:5555
server_name: mine
max_payload: 2MB
jetstream { store_dir: "`+filepath.Join(dir, "js")+`" }`)

	// Not given: the file's values.
	opts, err := serveropts.Options(serveropts.Config{File: file, Listen: "127.0.0.1:4222", DataDir: "./data"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", opts.Host)
	require.Equal(t, 5555, opts.Port)
	require.Equal(t, filepath.Join(dir, "js"), opts.StoreDir)
	require.Equal(t, "mine", opts.ServerName)
	require.EqualValues(t, 2<<20, opts.MaxPayload)
	require.True(t, opts.JetStream)
	require.True(t, opts.NoSigs)

	// Given: the flags win.
	opts, err = serveropts.Options(serveropts.Config{File: file, Listen: "127.0.0.1:6666", ListenSet: true, DataDir: "/d", DataDirSet: true})
	require.NoError(t, err)
	require.Equal(t, 6666, opts.Port)
	require.Equal(t, "/d", opts.StoreDir)

	// A file without listen or store dir takes the flag defaults, and the
	// embedded server's own defaults.
	opts, err = serveropts.Options(serveropts.Config{File: authtest.WriteFile(t, dir, "empty.conf", "# nothing\n"), Listen: "127.0.0.1:4222", DataDir: "./data"})
	require.NoError(t, err)
	require.Equal(t, 4222, opts.Port)
	require.Equal(t, "./data", opts.StoreDir)
	require.EqualValues(t, serveropts.MaxPayload, opts.MaxPayload)
	require.Equal(t, serveropts.ServerName, opts.ServerName)

	_, err = serveropts.Options(serveropts.Config{File: filepath.Join(dir, "missing.conf"), Listen: "127.0.0.1:4222"})
	require.ErrorContains(t, err, "--nats-config "+filepath.Join(dir, "missing.conf"))
	_, err = serveropts.Options(serveropts.Config{Listen: "nope"})
	require.ErrorContains(t, err, `--listen "nope"`)
}

func TestDeployConfigNeedsItsPasswords(t *testing.T) {
	setDeployPasswords(t)
	require.NoError(t, os.Unsetenv("NATS_LEASER_PASSWORD")) // t.Setenv restores it
	_, err := serveropts.Options(serveropts.Config{File: deployConfig, Listen: "127.0.0.1:4222"})
	require.ErrorContains(t, err, "NATS_LEASER_PASSWORD")

	t.Setenv("NATS_LEASER_PASSWORD", "")
	_, err = serveropts.Options(serveropts.Config{File: deployConfig, Listen: "127.0.0.1:4222"})
	require.ErrorContains(t, err, `user "leaser" has an empty password`)
}

func TestListenerTLS(t *testing.T) {
	pki := authtest.NewPKI(t)
	opts, err := serveropts.Options(serveropts.Config{Listen: "127.0.0.1:4222", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	require.NoError(t, err)
	require.True(t, opts.TLS)
	require.NotNil(t, opts.TLSConfig)

	_, err = serveropts.Options(serveropts.Config{Listen: "127.0.0.1:4222", TLSCert: pki.ServerCert})
	require.ErrorContains(t, err, "needs both --tls-cert and --tls-key")
	file := authtest.WriteFile(t, t.TempDir(), "tls.conf", `tls { cert_file: "`+pki.ServerCert+`", key_file: "`+pki.ServerKey+`" }`)
	_, err = serveropts.Options(serveropts.Config{File: file, Listen: "127.0.0.1:4222", TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	require.ErrorContains(t, err, "both configure the listener's TLS")
	_, err = serveropts.Options(serveropts.Config{Listen: "127.0.0.1:4222", TLSCert: pki.ServerCert, TLSKey: pki.ClientKey})
	require.ErrorContains(t, err, "--tls-cert "+pki.ServerCert)
}
