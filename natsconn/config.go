// Package natsconn holds how a pharox program reaches and logs in to NATS:
// server URLs, one login method (user and password, token, nkey seed,
// credentials file), mutual TLS, a custom inbox prefix, and for the command
// line the `nats` CLI's contexts. The worker, the `pharox` CLI and the
// gateway declare the same flags with AddFlags, check them with Check and
// turn them into nats.Options with Resolve.
//
// Secrets never come from a flag value: a password or token is read from
// PHAROX_NATS_PASSWORD / PHAROX_NATS_TOKEN or from a file, and is never
// printed (Secret formats as "[redacted]", Redact hides credentials inside
// a URL).
package natsconn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Environment variables that carry secrets; they have no flag on purpose.
const (
	EnvPassword = "PHAROX_NATS_PASSWORD"
	EnvToken    = "PHAROX_NATS_TOKEN"
	// EnvPrefix starts the environment twin of every flag:
	// --nats-tls-ca is PHAROX_NATS_TLS_CA.
	EnvPrefix = "PHAROX_"
)

// Flag names.
const (
	FlagURL          = "nats-url"
	FlagCreds        = "nats-creds"
	FlagNKey         = "nats-nkey"
	FlagUser         = "nats-user"
	FlagPasswordFile = "nats-password-file"
	FlagTokenFile    = "nats-token-file"
	FlagTLSCA        = "nats-tls-ca"
	FlagTLSCert      = "nats-tls-cert"
	FlagTLSKey       = "nats-tls-key"
	FlagInboxPrefix  = "inbox-prefix"
	FlagContext      = "context"
)

// EnvName is the PHAROX_* twin of a flag.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Secret is a password or token. It prints as "[redacted]" with every fmt
// verb and in JSON, so a Config logged by mistake leaks nothing; Reveal
// gives the value to the code that logs in.
type Secret string

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText hides the secret from encoders (JSON, zap).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is what the flags and the environment say. Every field but
// Password and Token has a flag (AddFlags); those two come from LoadEnv.
type Config struct {
	URL          string // comma-separated server URLs
	Creds        string // credentials file (user JWT + nkey seed)
	NKey         string // nkey seed file
	User         string
	PasswordFile string
	TokenFile    string
	TLSCA        string // CA bundle that signs the server's certificate
	TLSCert      string // client certificate for mutual TLS
	TLSKey       string // its private key
	InboxPrefix  string // replies arrive on <prefix>.>; default _INBOX
	Context      string // a `nats` CLI context by name (CLI only)

	Password Secret // PHAROX_NATS_PASSWORD
	Token    Secret // PHAROX_NATS_TOKEN

	// contexts is set by AddFlags(WithContextFlag()): with no URL, the
	// `nats` CLI's selected context is used.
	contexts bool
	// getenv is the environment LoadEnv was given; contexts are found
	// and expanded with it.
	getenv func(string) string
}

// LoadEnv reads the secrets from PHAROX_NATS_PASSWORD and PHAROX_NATS_TOKEN
// and notes where the `nats` CLI keeps its contexts. Flags are read by the
// flag package; call LoadEnv once they are parsed.
func (c *Config) LoadEnv(getenv func(string) string) {
	c.Password = Secret(getenv(EnvPassword))
	c.Token = Secret(getenv(EnvToken))
	c.getenv = getenv
}

// env reads the environment given to LoadEnv (none before).
func (c Config) env(key string) string {
	if c.getenv == nil {
		return ""
	}
	return c.getenv(key)
}

// method is one way of logging in and where it was given.
type method struct {
	name   string // user, token, nkey, creds
	source string // what the user typed, for messages
}

// methods lists every login method the settings give.
func (c Config) methods() []method {
	var m []method
	if c.User != "" {
		m = append(m, method{"user", "--" + FlagUser})
	}
	if c.Token != "" {
		m = append(m, method{"token", EnvToken})
	}
	if c.TokenFile != "" {
		m = append(m, method{"token", "--" + FlagTokenFile})
	}
	if c.NKey != "" {
		m = append(m, method{"nkey", "--" + FlagNKey})
	}
	if c.Creds != "" {
		m = append(m, method{"creds", "--" + FlagCreds})
	}
	if urlHasCredentials(c.URL) {
		m = append(m, method{"url", "credentials inside --" + FlagURL})
	}
	return m
}

// HasLogin reports whether any login method is given (a client certificate
// does not count: it is checked by TLS, not by the login).
func (c Config) HasLogin() bool {
	return len(c.methods()) > 0 || c.Password != "" || c.PasswordFile != ""
}

// LoginFlags names the login and TLS settings that are given, for messages
// such as "--nats-user needs --nats-url".
func (c Config) LoginFlags() []string {
	var out []string
	for _, m := range c.methods() {
		out = append(out, m.source)
	}
	if c.Password != "" {
		out = append(out, EnvPassword)
	}
	if c.PasswordFile != "" {
		out = append(out, "--"+FlagPasswordFile)
	}
	for _, f := range []struct{ v, name string }{{c.TLSCA, FlagTLSCA}, {c.TLSCert, FlagTLSCert}, {c.TLSKey, FlagTLSKey}} {
		if f.v != "" {
			out = append(out, "--"+f.name)
		}
	}
	return out
}

// Check refuses settings that cannot work, with a message that says what to
// change. It reads no file (Resolve does).
func (c Config) Check() error {
	ms := c.methods()
	// A password and a token file both given are two sources of one secret.
	if c.Token != "" && c.TokenFile != "" {
		return fmt.Errorf("the token is given twice, by %s and --%s: keep one", EnvToken, FlagTokenFile)
	}
	if c.Password != "" && c.PasswordFile != "" {
		return fmt.Errorf("the password is given twice, by %s and --%s: keep one", EnvPassword, FlagPasswordFile)
	}
	if len(ms) > 1 {
		names := make([]string, len(ms))
		for i, m := range ms {
			names[i] = m.source
		}
		return fmt.Errorf("choose one way to log in to NATS, got %s: a user and password, a token, an nkey seed or a credentials file", strings.Join(names, " and "))
	}
	if (c.Password != "" || c.PasswordFile != "") && c.User == "" {
		src := EnvPassword
		if c.PasswordFile != "" {
			src = "--" + FlagPasswordFile
		}
		return fmt.Errorf("%s gives a password but no user: add --%s NAME (or %s)", src, FlagUser, EnvName(FlagUser))
	}
	if c.User != "" && c.Password == "" && c.PasswordFile == "" {
		return fmt.Errorf("--%s %q needs its password: set %s or give --%s FILE", FlagUser, c.User, EnvPassword, FlagPasswordFile)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("mutual TLS needs both --%s and --%s (the client certificate and its private key)", FlagTLSCert, FlagTLSKey)
	}
	if err := checkInboxPrefix(c.InboxPrefix); err != nil {
		return err
	}
	if err := checkURLs(c.URL); err != nil {
		return err
	}
	if c.Context != "" && (strings.ContainsAny(c.Context, `/\`) || strings.Contains(c.Context, "..")) {
		return fmt.Errorf("--%s %q is not a context name (no /, \\ or ..)", FlagContext, c.Context)
	}
	return nil
}

// checkInboxPrefix accepts what nats.CustomInboxPrefix does, with a message.
func checkInboxPrefix(p string) error {
	if p == "" {
		return nil
	}
	if strings.ContainsAny(p, " \t\r\n*>") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
		return fmt.Errorf("--%s %q is not a subject prefix: no spaces or wildcards, no leading, trailing or double dot (e.g. _INBOX_crawler1)", FlagInboxPrefix, p)
	}
	return nil
}

// checkURLs parses each comma-separated URL the way nats.go does.
func checkURLs(s string) error {
	for _, raw := range splitURLs(s) {
		if _, err := parseURL(raw); err != nil {
			return fmt.Errorf("--%s: %q is not a NATS URL: %w", FlagURL, Redact(raw), errors.Unwrap(err))
		}
	}
	return nil
}

func splitURLs(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseURL parses one server URL; like nats.go, a missing scheme is nats://.
func parseURL(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw
	}
	u, err := url.Parse(raw)
	if err == nil && u.Host == "" {
		err = &url.Error{Op: "parse", URL: "", Err: errors.New("no host")}
	}
	return u, err
}

func urlHasCredentials(s string) bool {
	for _, raw := range splitURLs(s) {
		if u, err := parseURL(raw); err == nil && u.User != nil {
			return true
		}
	}
	return false
}
