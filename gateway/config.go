package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// TokensEnv holds client tokens in the environment: the token file's lines,
// separated by newlines or ";". Tokens are never given as flag values.
const TokensEnv = "PHAROX_GATEWAY_TOKENS"

// Config is what `pharox gateway` can be told, by flag or by its
// PHAROX_GATEWAY_* twin (a flag given on the command line wins). It lives
// here so that the command and the compose file's test read the same flags.
type Config struct {
	Listen         string
	SOCKSListen    string
	MetricsListen  string
	TokenFile      string
	Pool           string
	Consumer       string
	Retries        int
	LeaseSeconds   int
	DrainTimeout   time.Duration
	RequestTimeout time.Duration
	DialTimeout    time.Duration
	HeaderTimeout  time.Duration
	TLSCert        string
	TLSKey         string
	FailOnBlock    bool
	LogLevel       string
}

// EnvName is a flag's environment twin: --socks-listen is
// PHAROX_GATEWAY_SOCKS_LISTEN.
func EnvName(flag string) string {
	return "PHAROX_GATEWAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// AddFlags declares the gateway's flags on fs, each naming its twin.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	env := func(flag, usage string) string { return usage + " (env " + EnvName(flag) + ")" }
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", env("listen", "host:port of the HTTP proxy"))
	fs.StringVar(&c.SOCKSListen, "socks-listen", "", env("socks-listen", `host:port of the SOCKS5 proxy ("": off)`))
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", env("metrics-listen", `host:port serving Prometheus /metrics, /healthz and /readyz ("" or off: off)`))
	fs.StringVar(&c.TokenFile, "token-file", "", env("token-file", "file of client tokens, one per line, optionally followed by pools=a|b and consumer=name (tokens may also come from "+TokensEnv+")"))
	fs.StringVar(&c.Pool, "pool", "", env("pool", "pool of a request whose username names none"))
	fs.StringVar(&c.Consumer, "consumer", DefaultConsumer, env("consumer", "consumer a request leases as unless its username or token names one"))
	fs.IntVar(&c.Retries, "retries", DefaultRetries, env("retries", "other proxies tried after an upstream failure before answering 502"))
	fs.IntVar(&c.LeaseSeconds, "lease-seconds", DefaultLeaseSeconds, env("lease-seconds", "duration of a request's own lease, renewed while in use: what a crashed gateway holds at most"))
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, env("drain-timeout", "on SIGTERM, how long tunnels may go on before they are closed"))
	fs.DurationVar(&c.RequestTimeout, "request-timeout", DefaultRequestTimeout, env("request-timeout", "how long a call to the workers may take (an acquire that waits gets its wait on top); past it: 502"))
	fs.DurationVar(&c.DialTimeout, "dial-timeout", DefaultDialTimeout, env("dial-timeout", "connection and handshake with an upstream proxy; past it the proxy has failed"))
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", DefaultHeaderTimeout, env("header-timeout", "how long a client may take to send its request headers or SOCKS5 handshake"))
	fs.StringVar(&c.TLSCert, "tls-cert", "", env("tls-cert", "PEM certificate: serve the HTTP proxy over TLS (an HTTPS proxy), with --tls-key"))
	fs.StringVar(&c.TLSKey, "tls-key", "", env("tls-key", "PEM private key of --tls-cert"))
	fs.BoolVar(&c.FailOnBlock, "fail-on-block", false, env("fail-on-block", "a 403 or 429 from the target counts as the proxy's failure (blocked) on release"))
	fs.StringVar(&c.LogLevel, "log-level", "info", env("log-level", "debug, info, warn or error; debug logs one line per request"))
}

// ApplyEnv sets every flag of fs not given on the command line from its
// environment twin.
func (c *Config) ApplyEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || !c.owns(f.Name) {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, serr)
			}
		}
	})
	return err
}

// owns reports whether name is one of the flags AddFlags declares.
func (c *Config) owns(name string) bool {
	var probe Config
	fs := pflag.NewFlagSet("probe", pflag.ContinueOnError)
	probe.AddFlags(fs)
	return fs.Lookup(name) != nil
}

// Validate checks values that cannot work, with a message saying what to
// change. getenv tells whether TokensEnv holds tokens.
func (c *Config) Validate(getenv func(string) string) error {
	for _, a := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--socks-listen", c.SOCKSListen}, {"--metrics-listen", c.MetricsListen}} {
		if a.flag != "--listen" && (a.addr == "" || (a.flag == "--metrics-listen" && a.addr == "off")) {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return fmt.Errorf("%s must be host:port, got %q", a.flag, a.addr)
		}
	}
	switch {
	case c.Pool != "" && !model.ValidName(c.Pool):
		return fmt.Errorf("--pool must match ^[A-Za-z0-9_-]{1,128}$, got %q", c.Pool)
	case !model.ValidName(c.Consumer):
		return fmt.Errorf("--consumer must match ^[A-Za-z0-9_-]{1,128}$, got %q", c.Consumer)
	case c.Retries < 0 || c.Retries > 10:
		return fmt.Errorf("--retries must be 0..10, got %d", c.Retries)
	case c.LeaseSeconds < 1 || c.LeaseSeconds > model.MaxDurationSeconds:
		return fmt.Errorf("--lease-seconds must be 1..%d, got %d", model.MaxDurationSeconds, c.LeaseSeconds)
	case c.DrainTimeout < 0:
		return fmt.Errorf("--drain-timeout must not be negative, got %s", c.DrainTimeout)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("--request-timeout must be positive, got %s", c.RequestTimeout)
	case c.DialTimeout <= 0:
		return fmt.Errorf("--dial-timeout must be positive, got %s", c.DialTimeout)
	case c.HeaderTimeout <= 0:
		return fmt.Errorf("--header-timeout must be positive, got %s", c.HeaderTimeout)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.TokenFile == "" && strings.TrimSpace(getenv(TokensEnv)) == "" {
		for _, addr := range []string{c.Listen, c.SOCKSListen} {
			if addr != "" && !loopback(addr) {
				return fmt.Errorf("%s is not a loopback address and no client token is configured: give --token-file (or %s), or listen on 127.0.0.1", addr, TokensEnv)
			}
		}
	}
	return nil
}

// loopback reports whether host:port names only this machine.
func loopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoadTokens reads the token file and TokensEnv. A token file with no
// token in it is an error (it would silently turn authentication off).
func (c *Config) LoadTokens(getenv func(string) string) (*Tokens, error) {
	ts := &Tokens{}
	if c.TokenFile != "" {
		f, err := os.Open(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		defer f.Close()
		ft, err := ParseTokens(f)
		if err != nil {
			return nil, fmt.Errorf("--token-file %s: %w", c.TokenFile, err)
		}
		if ft.Len() == 0 {
			return nil, fmt.Errorf("--token-file %s holds no token", c.TokenFile)
		}
		ts.Add(ft)
	}
	if v := getenv(TokensEnv); strings.TrimSpace(v) != "" {
		et, err := ParseTokens(strings.NewReader(v))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", TokensEnv, err)
		}
		ts.Add(et)
	}
	return ts, nil
}

// MetricsOn reports whether --metrics-listen asks for metrics to be served.
func (c *Config) MetricsOn() bool { return c.MetricsListen != "" && c.MetricsListen != "off" }

// Options are the gateway options of c.
func (c *Config) Options(tokens *Tokens, log *zap.Logger) []Option {
	return []Option{WithTokens(tokens), WithPool(c.Pool), WithConsumer(c.Consumer), WithRetries(c.Retries),
		WithLeaseSeconds(c.LeaseSeconds), WithRequestTimeout(c.RequestTimeout), WithDialTimeout(c.DialTimeout),
		WithHeaderTimeout(c.HeaderTimeout), WithFailOnBlock(c.FailOnBlock), WithLogger(log)}
}
