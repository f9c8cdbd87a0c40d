package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Settings is a checked Config with its files read: the servers to dial and
// the options that log in. It holds secrets only inside the nats.Options.
type Settings struct {
	// URL lists the servers without credentials (those inside the given
	// URL are moved to the options); empty means nats.DefaultURL, or the
	// caller's own server (the worker's embedded one).
	URL string
	// Login says how this program logs in, for logs and messages, never
	// with a secret: `user "leaser" (password from PHAROX_NATS_PASSWORD)`.
	Login string
	// Context is the `nats` CLI context used, if any.
	Context string
	// URLCredentials is set when the URL carried a user, password or token.
	URLCredentials bool
	// InboxPrefix is the custom inbox prefix, if any.
	InboxPrefix string

	opts       []nats.Option
	hint       string // what to check when the server refuses the login
	clientCert bool   // a client certificate is offered
}

// Options returns the nats.Options that log in, set up TLS and the inbox
// prefix. Give them to nats.Connect with the caller's own options.
func (s Settings) Options() []nats.Option {
	return append([]nats.Option(nil), s.opts...)
}

// Connect dials s.URL (nats.DefaultURL when empty) with s's options and
// opts; a refused login or TLS failure comes back as an error saying what
// to change (ConnectError).
func (s Settings) Connect(opts ...nats.Option) (*nats.Conn, error) {
	url := s.URL
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, append(s.Options(), opts...)...)
	if err != nil {
		return nil, s.ConnectError(url, err)
	}
	return nc, nil
}

// Resolve checks c, applies the `nats` CLI context if one is named or
// selected, reads every file it names (password, token, nkey seed,
// credentials, certificates) and returns the settings to connect with. The
// error names the flag or file to fix.
func (c Config) Resolve() (Settings, error) {
	if err := c.Check(); err != nil {
		return Settings{}, err
	}
	var s Settings
	name, err := c.contextName()
	if err != nil {
		return Settings{}, err
	}
	from := map[string]string{} // where each secret came from, for Login
	if name != "" {
		nctx, err := c.loadContext(name)
		if err != nil {
			return Settings{}, err
		}
		c, from = c.withContext(nctx, name)
		s.Context = name
		if err := c.Check(); err != nil {
			return Settings{}, fmt.Errorf("context %q: %w", name, err)
		}
	}

	urls, inURL, err := stripCredentials(c.URL)
	if err != nil {
		return Settings{}, err
	}
	user := inURL.Username()
	pass, hasPass := inURL.Password()
	s.URL = strings.Join(urls, ",")
	s.InboxPrefix = c.InboxPrefix
	var login []string
	switch {
	case user != "" && hasPass:
		s.URLCredentials = true
		s.opts = append(s.opts, nats.UserInfo(user, pass))
		login = append(login, fmt.Sprintf("user %q (password from the URL)", user))
		s.hint = "check the user and password inside --" + FlagURL
	case user != "":
		s.URLCredentials = true
		s.opts = append(s.opts, nats.Token(user))
		login = append(login, "token (from the URL)")
		s.hint = "check the token inside --" + FlagURL
	case c.User != "":
		pw, src := c.Password.Reveal(), orDefault(from["password"], EnvPassword)
		if c.PasswordFile != "" {
			if pw, err = readSecret(c.PasswordFile, "--"+FlagPasswordFile); err != nil {
				return Settings{}, err
			}
			src = c.PasswordFile
		}
		s.opts = append(s.opts, nats.UserInfo(c.User, pw))
		login = append(login, fmt.Sprintf("user %q (password from %s)", c.User, src))
		s.hint = fmt.Sprintf("check the user name (--%s) and its password (%s or --%s)", FlagUser, EnvPassword, FlagPasswordFile)
	case c.Token != "" || c.TokenFile != "":
		tok, src := c.Token.Reveal(), orDefault(from["token"], EnvToken)
		if c.TokenFile != "" {
			if tok, err = readSecret(c.TokenFile, "--"+FlagTokenFile); err != nil {
				return Settings{}, err
			}
			src = c.TokenFile
		}
		s.opts = append(s.opts, nats.Token(tok))
		login = append(login, "token (from "+src+")")
		s.hint = fmt.Sprintf("check the token (%s or --%s)", EnvToken, FlagTokenFile)
	case c.NKey != "":
		opt, pub, err := nkeyOption(c.NKey)
		if err != nil {
			return Settings{}, err
		}
		s.opts = append(s.opts, opt)
		login = append(login, fmt.Sprintf("nkey %s (seed %s)", pub, c.NKey))
		s.hint = fmt.Sprintf("the server knows no user with nkey %s: add it to the server's users", pub)
	case c.Creds != "":
		who, err := checkCreds(c.Creds)
		if err != nil {
			return Settings{}, err
		}
		// UserCredentials reads the file again at each reconnect, so a
		// rotated file is picked up.
		s.opts = append(s.opts, nats.UserCredentials(c.Creds))
		login = append(login, fmt.Sprintf("credentials %s (%s)", c.Creds, who))
		s.hint = fmt.Sprintf("the server does not accept the user JWT in %s: it is not signed by an account the server trusts, it was revoked, or it expired", c.Creds)
	default:
		s.hint = fmt.Sprintf("the server requires a login: give --%s with %s, a token (%s or --%s), --%s, --%s or a client certificate",
			FlagUser, EnvPassword, EnvToken, FlagTokenFile, FlagNKey, FlagCreds)
	}

	if c.TLSCA != "" || c.TLSCert != "" || from["tls_first"] != "" {
		tc, who, err := tlsConfig(c.TLSCA, c.TLSCert, c.TLSKey)
		if err != nil {
			return Settings{}, err
		}
		s.opts = append(s.opts, nats.Secure(tc))
		if from["tls_first"] != "" {
			s.opts = append(s.opts, nats.TLSHandshakeFirst())
		}
		if c.TLSCert != "" {
			s.clientCert = true
			login = append(login, "client certificate "+who)
		}
	}
	if c.InboxPrefix != "" {
		s.opts = append(s.opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	if len(login) == 0 {
		login = append(login, "no login")
	}
	s.Login = strings.Join(login, ", ")
	if s.Context != "" && !strings.Contains(s.Login, "nats context") {
		s.Login += fmt.Sprintf(" (nats context %q)", s.Context)
	}
	return s, nil
}

// withContext fills what c leaves empty from a context. The login is taken
// as a whole: any login given by flag or environment replaces the
// context's.
func (c Config) withContext(n natsContext, name string) (Config, map[string]string) {
	from := map[string]string{}
	src := fmt.Sprintf("nats context %q", name)
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&c.URL, n.URL)
	set(&c.TLSCA, n.CA)
	if c.TLSCert == "" && c.TLSKey == "" {
		c.TLSCert, c.TLSKey = n.Cert, n.Key
	}
	set(&c.InboxPrefix, n.InboxPrefix)
	if n.TLSFirst {
		from["tls_first"] = src
	}
	if !c.HasLogin() {
		c.User, c.Password, c.Token, c.Creds, c.NKey = n.User, Secret(n.Password), Secret(n.Token), n.Creds, n.NKey
		from["password"], from["token"] = src, src
	}
	return c, from
}

// stripCredentials splits the URL list and takes the credentials out of its
// URLs; they must be the same in each.
func stripCredentials(s string) ([]string, *url.Userinfo, error) {
	var urls []string
	var seen *url.Userinfo
	for _, raw := range splitURLs(s) {
		u, err := parseURL(raw)
		if err != nil || u.User == nil {
			urls = append(urls, raw)
			continue
		}
		if seen != nil && seen.String() != u.User.String() {
			return nil, nil, fmt.Errorf("--%s: the URLs carry different credentials; give the login once (e.g. --%s and %s) for all of them", FlagURL, FlagUser, EnvPassword)
		}
		seen = u.User
		u.User = nil
		urls = append(urls, u.String())
	}
	return urls, seen, nil
}

// readSecret reads a password or token file; one trailing newline is not
// part of the secret.
func readSecret(path, flag string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", flag, path)
	}
	return v, nil
}

// nkeyOption reads an nkey seed file and returns the option and the public
// key (not secret, logged).
func nkeyOption(path string) (nats.Option, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("--%s: %w", FlagNKey, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("--%s %s holds no nkey seed (a line starting SU...): %w", FlagNKey, path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return nil, "", fmt.Errorf("--%s %s is not a user seed (SU...); `nk -gen user` makes one", FlagNKey, path)
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return nil, "", fmt.Errorf("--%s %s: %w", FlagNKey, path, err)
	}
	return opt, pub, nil
}

// checkCreds reads a credentials file and says whose it is.
func checkCreds(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", FlagCreds, err)
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", fmt.Errorf("--%s %s holds no user JWT: %w", FlagCreds, path, err)
	}
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", fmt.Errorf("--%s %s holds no user JWT: %w", FlagCreds, path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("--%s %s holds no nkey seed after the JWT: %w", FlagCreds, path, err)
	}
	kp.Wipe()
	return fmt.Sprintf("user %q %s", claims.Name, claims.Subject), nil
}

// tlsConfig builds the client TLS: the CA that signs the server, and a
// client certificate for mutual TLS. It returns the certificate's subject.
func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, string, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, "", fmt.Errorf("--%s: %w", FlagTLSCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("--%s %s holds no PEM certificate", FlagTLSCA, caFile)
		}
		tc.RootCAs = pool
	}
	var who string
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, "", fmt.Errorf("--%s %s / --%s %s: %w", FlagTLSCert, certFile, FlagTLSKey, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			who = fmt.Sprintf("%q (%s)", leaf.Subject.String(), certFile)
		}
	}
	return tc, who, nil
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
