package natsconn_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/natsconn"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                   "nats://127.0.0.1:4222",
		"nats://s3cr3tT0ken@127.0.0.1:4222":       "nats://xxxxx@127.0.0.1:4222",
		"nats://alice:pa55@host:4222":             "nats://alice:xxxxx@host:4222",
		"tls://alice:pa55@a:1,nats://tok@b:2,c:3": "tls://alice:xxxxx@a:1,nats://xxxxx@b:2,c:3",
		"tok@host:4222":                           "xxxxx@host:4222",
		"alice:pa55@host:4222":                    "xxxxx@host:4222",
		"nats://we ird:p@ss@host":                 "nats://xxxxx@host",
		"nats://host:4222, nats://t0k@other:4222": "nats://host:4222,nats://xxxxx@other:4222",
	} {
		got := natsconn.Redact(in)
		require.Equal(t, strings.ReplaceAll(want, " ", ""), strings.ReplaceAll(got, " ", ""), "Redact(%q)", in)
		for _, secret := range []string{"s3cr3tT0ken", "pa55", "tok@", "t0k", "p@ss"} {
			require.NotContains(t, got, secret, "Redact(%q)", in)
		}
	}
}

func TestCheckRefusesWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  natsconn.Config
		env  map[string]string
		want string
	}{
		{"token and user", natsconn.Config{User: "a"}, map[string]string{natsconn.EnvToken: "t", natsconn.EnvPassword: "p"}, "choose one way to log in to NATS, got --nats-user and PHAROX_NATS_TOKEN"},
		{"token file and user", natsconn.Config{User: "a", TokenFile: "f"}, map[string]string{natsconn.EnvPassword: "p"}, "--nats-user and --nats-token-file"},
		{"creds and nkey", natsconn.Config{Creds: "c", NKey: "n"}, nil, "--nats-nkey and --nats-creds"},
		{"user and creds", natsconn.Config{User: "a", Creds: "c"}, map[string]string{natsconn.EnvPassword: "p"}, "--nats-user and --nats-creds"},
		{"URL credentials and nkey", natsconn.Config{URL: "nats://tok@h:1", NKey: "n"}, nil, "--nats-nkey and credentials inside --nats-url"},
		{"password without user", natsconn.Config{}, map[string]string{natsconn.EnvPassword: "p"}, "PHAROX_NATS_PASSWORD gives a password but no user: add --nats-user NAME"},
		{"password file without user", natsconn.Config{PasswordFile: "f"}, nil, "--nats-password-file gives a password but no user"},
		{"user without password", natsconn.Config{User: "alice"}, nil, `--nats-user "alice" needs its password: set PHAROX_NATS_PASSWORD or give --nats-password-file FILE`},
		{"password twice", natsconn.Config{User: "a", PasswordFile: "f"}, map[string]string{natsconn.EnvPassword: "p"}, "the password is given twice"},
		{"token twice", natsconn.Config{TokenFile: "f"}, map[string]string{natsconn.EnvToken: "t"}, "the token is given twice"},
		{"cert without key", natsconn.Config{TLSCert: "c"}, nil, "mutual TLS needs both --nats-tls-cert and --nats-tls-key"},
		{"key without cert", natsconn.Config{TLSKey: "k"}, nil, "mutual TLS needs both"},
		{"inbox with wildcard", natsconn.Config{InboxPrefix: "_INBOX_a.>"}, nil, "--inbox-prefix \"_INBOX_a.>\" is not a subject prefix"},
		{"inbox with trailing dot", natsconn.Config{InboxPrefix: "_INBOX_a."}, nil, "is not a subject prefix"},
		{"context with a path", natsconn.Config{Context: "../x"}, nil, "is not a context name"},
		{"bad URL", natsconn.Config{URL: "nats://h:port"}, nil, "is not a NATS URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.LoadEnv(env(tc.env))
			err := cfg.Check()
			require.ErrorContains(t, err, tc.want)
			_, err = cfg.Resolve()
			require.ErrorContains(t, err, tc.want, "Resolve checks too")
		})
	}

	// What is fine: one method, TLS beside it, a cert with its key.
	ok := natsconn.Config{User: "a", TLSCA: "ca", TLSCert: "c", TLSKey: "k", InboxPrefix: "_INBOX_a", URL: "nats://h:1, tls://h2:2"}
	ok.LoadEnv(env(map[string]string{natsconn.EnvPassword: "p"}))
	require.NoError(t, ok.Check())
	_ = dir
}

func TestResolveNamesTheFileToFix(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	empty := authtest.WriteFile(t, dir, "empty", "\n")
	junk := authtest.WriteFile(t, dir, "junk", "not a key\n")
	pki := authtest.NewPKI(t)
	for _, tc := range []struct {
		name string
		cfg  natsconn.Config
		want string
	}{
		{"missing password file", natsconn.Config{User: "a", PasswordFile: missing}, "--nats-password-file: open " + missing},
		{"empty token file", natsconn.Config{TokenFile: empty}, "--nats-token-file " + empty + " is empty"},
		{"missing nkey", natsconn.Config{NKey: missing}, "--nats-nkey: open"},
		{"junk nkey", natsconn.Config{NKey: junk}, "--nats-nkey " + junk + " holds no nkey seed"},
		{"junk creds", natsconn.Config{Creds: junk}, "--nats-creds " + junk + " holds no user JWT"},
		{"missing CA", natsconn.Config{TLSCA: missing}, "--nats-tls-ca: open"},
		{"junk CA", natsconn.Config{TLSCA: junk}, "--nats-tls-ca " + junk + " holds no PEM certificate"},
		{"cert and wrong key", natsconn.Config{TLSCert: pki.ClientCert, TLSKey: pki.ServerKey}, "--nats-tls-cert " + pki.ClientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.Resolve()
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSecretsHaveNoFlag(t *testing.T) {
	// The standard library's flag package (the worker) ...
	var c natsconn.Config
	fs := flag.NewFlagSet("w", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.AddFlags(fs)
	for _, name := range []string{"nats-password", "nats-token", "password", "token"} {
		require.Nil(t, fs.Lookup(name), "--%s must not exist: a secret in a flag value shows in the process list", name)
	}
	require.Error(t, fs.Parse([]string{"--nats-password", "x"}))
	require.NoError(t, fs.Parse([]string{"--nats-user", "alice", "--nats-password-file", "/f", "--inbox-prefix", "_INBOX_alice"}))
	require.Equal(t, "alice", c.User)
	require.Equal(t, "_INBOX_alice", c.InboxPrefix)
	require.Nil(t, fs.Lookup("context"), "only the CLI has --context")

	// ... and pflag (the CLI), with defaults from the environment.
	var p natsconn.Config
	pfs := pflag.NewFlagSet("cli", pflag.ContinueOnError)
	pfs.SetOutput(io.Discard)
	p.AddFlags(pfs, natsconn.WithContextFlag(), natsconn.WithEnvDefaults(env(map[string]string{
		"PHAROX_NATS_USER": "bob", "PHAROX_CONTEXT": "prod", "PHAROX_NATS_TLS_CA": "/ca.pem",
	})))
	require.NoError(t, pfs.Parse([]string{"--nats-user", "carol"}))
	require.Equal(t, "carol", p.User, "a flag wins over its variable")
	require.Equal(t, "prod", p.Context)
	require.Equal(t, "/ca.pem", p.TLSCA)
	require.Contains(t, pfs.Lookup("nats-user").Usage, "(env PHAROX_NATS_USER)")
	require.Error(t, pfs.Parse([]string{"--nats-token", "x"}))
}

func TestSecretsDoNotPrint(t *testing.T) {
	c := natsconn.Config{User: "alice"}
	c.LoadEnv(env(map[string]string{natsconn.EnvPassword: "hunter2-pw", natsconn.EnvToken: "tok-XYZ"}))
	require.Equal(t, "hunter2-pw", c.Password.Reveal())
	j, err := json.Marshal(c)
	require.NoError(t, err)
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(c.Password), string(j)} {
		require.NotContains(t, out, "hunter2-pw")
		require.NotContains(t, out, "tok-XYZ")
	}
	require.Contains(t, string(j), "[redacted]")
}
