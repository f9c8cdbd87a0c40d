package natsconn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/natsconn"
)

// connect resolves cfg with env and connects.
func connect(t *testing.T, cfg natsconn.Config, envs map[string]string) (*nats.Conn, natsconn.Settings, error) {
	t.Helper()
	cfg.LoadEnv(env(envs))
	s, err := cfg.Resolve()
	require.NoError(t, err)
	nc, err := s.Connect(nats.Timeout(5*time.Second), nats.NoReconnect())
	if nc != nil {
		t.Cleanup(nc.Close)
	}
	return nc, s, err
}

// TestLoginMethods connects with each method to a server that requires it,
// and checks a wrong credential is refused with a message that says so.
func TestLoginMethods(t *testing.T) {
	dir := t.TempDir()
	seed, pub := authtest.NKeyUser(t)
	otherSeed, _ := authtest.NKeyUser(t)
	users := authtest.RunServer(t, &server.Options{
		Users: []*server.User{{Username: "alice", Password: "right-pw"}},
		Nkeys: []*server.NkeyUser{{Nkey: pub}},
	})
	tokenSrv := authtest.RunServer(t, &server.Options{Authorization: "right-token"})
	op := authtest.NewOperator(t)
	jwtOpts := &server.Options{}
	op.Apply(t, jwtOpts)
	jwtSrv := authtest.RunServer(t, jwtOpts)

	pwFile := authtest.WriteFile(t, dir, "pw", "right-pw\n")
	tokFile := authtest.WriteFile(t, dir, "tok", "right-token\n")

	for _, tc := range []struct {
		name   string
		srv    *server.Server
		cfg    natsconn.Config
		env    map[string]string
		wrong  natsconn.Config
		wrongE map[string]string
		hint   string
	}{
		{"user and password from the environment", users, natsconn.Config{User: "alice"}, map[string]string{natsconn.EnvPassword: "right-pw"},
			natsconn.Config{User: "alice"}, map[string]string{natsconn.EnvPassword: "wrong-pw"}, "check the user name (--nats-user) and its password"},
		{"user and password file", users, natsconn.Config{User: "alice", PasswordFile: pwFile}, nil,
			natsconn.Config{User: "mallory", PasswordFile: pwFile}, nil, `as user "mallory" (password from ` + pwFile},
		{"token from the environment", tokenSrv, natsconn.Config{}, map[string]string{natsconn.EnvToken: "right-token"},
			natsconn.Config{}, map[string]string{natsconn.EnvToken: "wrong-token"}, "check the token (PHAROX_NATS_TOKEN or --nats-token-file)"},
		{"token file", tokenSrv, natsconn.Config{TokenFile: tokFile}, nil,
			natsconn.Config{}, nil, "the server requires a login"},
		{"nkey", users, natsconn.Config{NKey: seed}, nil,
			natsconn.Config{NKey: otherSeed}, nil, "the server knows no user with nkey"},
		{"creds", jwtSrv, natsconn.Config{Creds: op.CredsFile}, nil,
			natsconn.Config{Creds: op.ForeignCreds}, nil, "not signed by an account the server trusts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.URL = tc.srv.ClientURL()
			nc, s, err := connect(t, tc.cfg, tc.env)
			require.NoError(t, err, "login as %s", s.Login)
			require.NoError(t, nc.Flush())
			require.NotContains(t, s.Login, "right-")

			tc.wrong.URL = tc.srv.ClientURL()
			_, s, err = connect(t, tc.wrong, tc.wrongE)
			require.Error(t, err)
			require.ErrorIs(t, err, natsconn.ErrLoginRefused)
			require.ErrorIs(t, err, nats.ErrAuthorization)
			require.ErrorContains(t, err, "refused the login (Authorization Violation)")
			require.ErrorContains(t, err, tc.hint)
			require.NotContains(t, err.Error(), "wrong-")
		})
	}

	t.Run("credentials inside the URL are moved out of it", func(t *testing.T) {
		// nats.go's own redaction hides a password but prints a token.
		raw, err := nats.Connect(strings.Replace(tokenSrv.ClientURL(), "nats://", "nats://right-token@", 1))
		require.NoError(t, err)
		defer raw.Close()
		require.Contains(t, raw.ConnectedUrlRedacted(), "right-token", "nats.go's ConnectedUrlRedacted prints a token")
		require.NotContains(t, natsconn.Redact(raw.ConnectedUrl()), "right-token")

		nc, s, err := connect(t, natsconn.Config{URL: strings.Replace(tokenSrv.ClientURL(), "nats://", "nats://right-token@", 1)}, nil)
		require.NoError(t, err)
		require.True(t, s.URLCredentials)
		require.NotContains(t, s.URL, "right-token")
		require.NotContains(t, nc.ConnectedUrlRedacted(), "right-token")
		require.NotContains(t, nc.ConnectedUrl(), "right-token")

		nc, s, err = connect(t, natsconn.Config{URL: strings.Replace(users.ClientURL(), "nats://", "nats://alice:right-pw@", 1)}, nil)
		require.NoError(t, err)
		require.Equal(t, users.ClientURL(), s.URL)
		require.Equal(t, `user "alice" (password from the URL)`, s.Login)
		require.NotContains(t, nc.ConnectedUrl(), "right-pw")
	})
}

func TestMutualTLS(t *testing.T) {
	pki := authtest.NewPKI(t)
	srv := authtest.RunServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: pki.ServerTLS(t, true), TLSTimeout: 5})
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)

	nc, s, err := connect(t, natsconn.Config{URL: url, TLSCA: pki.CAFile, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, nil)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	require.Contains(t, s.Login, `client certificate "CN=client"`)

	for _, tc := range []struct {
		name string
		cfg  natsconn.Config
		want string
	}{
		{"no client certificate", natsconn.Config{TLSCA: pki.CAFile}, "requires a client certificate signed by a CA it trusts: give --nats-tls-cert and --nats-tls-key"},
		{"a certificate from another CA", natsconn.Config{TLSCA: pki.CAFile, TLSCert: pki.ForeignCert, TLSKey: pki.ForeignKey}, "refused the client certificate"},
		{"the server's CA not trusted", natsconn.Config{TLSCA: pki.ForeignCAFile, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, "presents a certificate this program does not trust: give --nats-tls-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.URL = url
			_, _, err := connect(t, tc.cfg, nil)
			require.ErrorIs(t, err, natsconn.ErrTLS)
			require.ErrorContains(t, err, tc.want)
		})
	}
	t.Run("TLS required, no CA given", func(t *testing.T) {
		// nats.go switches to TLS when the server requires it, then cannot
		// verify the server's certificate with the system roots.
		_, _, err := connect(t, natsconn.Config{URL: srv.ClientURL()}, nil)
		require.ErrorIs(t, err, natsconn.ErrTLS)
		require.ErrorContains(t, err, "does not trust: give --nats-tls-ca")
	})
}

// TestDenied checks the explanation of a permissions violation the server
// reports asynchronously, and the custom inbox prefix.
func TestDenied(t *testing.T) {
	srv := authtest.RunServer(t, &server.Options{Users: []*server.User{{Username: "leaser", Password: "pw", Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"pharox.acquire"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_leaser.>"}},
	}}}})
	violations := make(chan error, 10)
	handler := nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err })

	cfg := natsconn.Config{URL: srv.ClientURL(), User: "leaser", InboxPrefix: "_INBOX_leaser"}
	cfg.LoadEnv(env(map[string]string{natsconn.EnvPassword: "pw"}))
	s, err := cfg.Resolve()
	require.NoError(t, err)
	nc, err := s.Connect(handler)
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, strings.HasPrefix(nc.NewInbox(), "_INBOX_leaser."))
	require.NoError(t, nc.Publish("pharox.admin.pools.delete", []byte(`{"name":"p"}`)))
	require.NoError(t, nc.Flush())
	err = natsconn.Denied(<-violations)
	require.ErrorIs(t, err, natsconn.ErrPermissionDenied)
	require.ErrorIs(t, err, nats.ErrPermissionViolation)
	require.EqualError(t, err, `the NATS user this program logs in as may not publish to "pharox.admin.pools.delete" (Permissions Violation): administration needs a user with pharox's admin role`)

	// Without its inbox prefix the user cannot read its replies.
	cfg.InboxPrefix = ""
	s, err = cfg.Resolve()
	require.NoError(t, err)
	nc2, err := s.Connect(handler)
	require.NoError(t, err)
	defer nc2.Close()
	_, err = nc2.Request("pharox.acquire", nil, 200*time.Millisecond)
	require.Error(t, err)
	err = natsconn.Denied(<-violations)
	require.ErrorContains(t, err, `may not subscribe to "_INBOX.`)
	require.ErrorContains(t, err, "set --inbox-prefix (PHAROX_INBOX_PREFIX) to the inbox prefix the user may subscribe to")

	require.Nil(t, natsconn.Denied(errors.New("other")))
}
