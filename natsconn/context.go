package natsconn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// natsContext is the part of a `nats` CLI context file
// (~/.config/nats/context/NAME.json) pharox uses. The format is the one
// documented by github.com/nats-io/jsm.go/natscontext; that package is not
// imported because it brings the whole jsm.go module with it.
type natsContext struct {
	URL         string `json:"url"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Token       string `json:"token"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`

	// Settings pharox cannot honour; a context using one is refused rather
	// than half applied.
	NSC              string `json:"nsc"`
	UserJWT          string `json:"user_jwt"`
	UserSeed         string `json:"user_seed"`
	SocksProxy       string `json:"socks_proxy"`
	JSDomain         string `json:"jetstream_domain"`
	JSAPIPrefix      string `json:"jetstream_api_prefix"`
	WinCertStoreType string `json:"windows_cert_store"`
}

// contextDir is where the nats CLI keeps its contexts:
// $XDG_CONFIG_HOME/nats, else ~/.config/nats.
func (c Config) contextDir() string {
	if x := c.env("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nats")
	}
	if h := c.env("HOME"); h != "" {
		return filepath.Join(h, ".config", "nats")
	}
	return ""
}

// contextName is the context to use: --context, else the selected one when
// no --nats-url is given, else none.
func (c Config) contextName() (string, error) {
	if c.Context != "" {
		return c.Context, nil
	}
	if !c.contexts || c.URL != "" || c.contextDir() == "" {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(c.contextDir(), "context.txt"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("the nats CLI's selected context: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// loadContext reads and checks a named context.
func (c Config) loadContext(name string) (natsContext, error) {
	var nctx natsContext
	dir := c.contextDir()
	if dir == "" {
		return nctx, fmt.Errorf("context %q: neither XDG_CONFIG_HOME nor HOME is set, so the nats CLI's contexts cannot be found", name)
	}
	path := filepath.Join(dir, "context", name+".json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nctx, fmt.Errorf("context %q: %s does not exist (nats context ls lists the contexts)", name, path)
	}
	if err != nil {
		return nctx, fmt.Errorf("context %q: %w", name, err)
	}
	if err := json.Unmarshal(b, &nctx); err != nil {
		return nctx, fmt.Errorf("context %q: %s is not a nats context file: %w", name, path, err)
	}
	for _, u := range []struct{ v, what string }{
		{nctx.NSC, "nsc"}, {nctx.UserJWT, "user_jwt"}, {nctx.UserSeed, "user_seed"}, {nctx.SocksProxy, "socks_proxy"},
		{nctx.JSDomain, "jetstream_domain"}, {nctx.JSAPIPrefix, "jetstream_api_prefix"}, {nctx.WinCertStoreType, "windows_cert_store"},
	} {
		if u.v != "" {
			return nctx, fmt.Errorf("context %q sets %s, which pharox does not support: give the connection with flags instead", name, u.what)
		}
	}
	// Paths may start with ~ or hold $VARIABLES, as the nats CLI allows.
	for _, p := range []*string{&nctx.Creds, &nctx.NKey, &nctx.Cert, &nctx.Key, &nctx.CA} {
		v, err := c.contextPath(*p)
		if err != nil {
			return nctx, fmt.Errorf("context %q: %w", name, err)
		}
		*p = v
	}
	for _, p := range []struct {
		v    *string
		what string
	}{{&nctx.Password, "password"}, {&nctx.Token, "token"}, {&nctx.User, "user"}} {
		v, err := c.contextLiteral(*p.v)
		if err != nil {
			return nctx, fmt.Errorf("context %q: %s: %w", name, p.what, err)
		}
		*p.v = v
	}
	return nctx, nil
}

// contextPath resolves a path field: a plain path (~ and $VAR expanded) or
// a file:// URI.
func (c Config) contextPath(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(v, "file://"); ok {
		return rest, nil
	}
	if scheme, _, ok := strings.Cut(v, "://"); ok {
		return "", fmt.Errorf("%s:// references are not supported; give a file path", scheme)
	}
	v = os.Expand(v, c.env)
	if rest, ok := strings.CutPrefix(v, "~"); ok {
		v = c.env("HOME") + rest
	}
	return v, nil
}

// contextLiteral resolves a secret field: a literal, env://NAME or
// file://PATH.
func (c Config) contextLiteral(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "env://"):
		return c.env(strings.TrimPrefix(v, "env://")), nil
	case strings.HasPrefix(v, "file://"):
		b, err := os.ReadFile(strings.TrimPrefix(v, "file://"))
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case strings.HasPrefix(v, "op://"), strings.HasPrefix(v, "nsc://"), strings.HasPrefix(v, "data:"):
		scheme, _, _ := strings.Cut(v, ":")
		return "", fmt.Errorf("%s: references are not supported; use a literal, env://NAME or file://PATH", scheme)
	}
	return v, nil
}
