package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/natsconn"
)

// config is everything the worker can be told, by flag or PHAROX_* variable.
type config struct {
	// NATS is how to reach and log in to NATS (--nats-url, --nats-user, ...;
	// see natsconn). In embedded mode its login is used against the
	// embedded server, which needs --nats-config to have users.
	NATS           natsconn.Config
	NATSConfig     string // --nats-config: nats-server configuration of the embedded server
	TLSCert        string // --tls-cert: TLS on the embedded server's listener
	TLSKey         string
	Listen         string
	DataDir        string
	Seed           string
	SubjectPrefix  string
	Replicas       int
	Shards         int
	MaxInflight    int
	RequestTimeout time.Duration
	MaxDuration    time.Duration
	SweepInterval  time.Duration
	LeaseRetention time.Duration
	ExpiryGrace    time.Duration
	LogLevel       string

	HealthConcurrency int
	HealthSweeps      bool

	// CredentialsKeyFile (--credentials-key-file) or CredentialsKey
	// (PHAROX_CREDENTIALS_KEY, no flag: a key is never a flag value) hold
	// the keys that seal proxy credentials; keys is what they hold, loaded
	// by run.
	CredentialsKeyFile string
	CredentialsKey     natsconn.Secret
	keys               *credkey.Ring

	MaxLeasesPerConsumer int
	MaxWaiters           int
	// RekeyConcurrency is worker rekey's writes at once.
	RekeyConcurrency int
	// MetricsListen is --metrics-listen (metrics.go): "" picks the mode's
	// default, "off" serves nothing.
	MetricsListen string

	// set holds the flags given on the command line or by PHAROX_*, so that
	// --listen and --data-dir win over --nats-config only when given.
	set map[string]bool
}

// newFlagSet declares every flag with its PHAROX_* twin named in the help.
func newFlagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	cfg.NATS.AddFlags(fs, natsconn.WithURLUsage("join an existing NATS deployment at this URL (comma-separated for a cluster) instead of starting an embedded server"))
	fs.StringVar(&cfg.NATSConfig, "nats-config", "", "nats-server configuration file for the embedded server (accounts, users, permissions, TLS; see deploy/nats-server.conf); the worker logs in to it with --nats-user/--nats-creds/...")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:4222", "host:port of the embedded NATS server (ignored with --nats-url; wins over --nats-config's listen when given); an address other machines reach needs a --nats-config that requires a login")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "JetStream file storage of the embedded NATS server (ignored with --nats-url; wins over --nats-config's store_dir when given)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate: the embedded server's listener speaks TLS (with --tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&cfg.Seed, "seed", "", "JSON file of pools and proxies to create on start if they do not exist (see examples/seed.json)")
	fs.StringVar(&cfg.SubjectPrefix, "subject-prefix", "pharox", "first token of every subject served and published (<prefix>.acquire, <prefix>.events.*)")
	fs.IntVar(&cfg.Shards, "shards", 1, "proxies buckets (shards) the pools are spread over, 1..64; fixed when the buckets are first created")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas of the KV buckets and the event stream when this worker creates them (1, or 3 on a 3-node cluster)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 256, "requests one worker handles at once; more wait in line")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 5*time.Second, "deadline of each request; a store that does not answer in time gives 503 unavailable with nothing changed")
	fs.DurationVar(&cfg.MaxDuration, "max-duration", 24*time.Hour, "longest lease a client may ask for (duration_seconds upper bound), at most 24h")
	fs.DurationVar(&cfg.SweepInterval, "sweep-interval", 5*time.Second, "how often this worker marks expired leases as expired and frees their slots (0 disables)")
	fs.DurationVar(&cfg.LeaseRetention, "lease-retention", 24*time.Hour, "how long released and expired lease records stay readable through leases.get before they disappear on their own")
	fs.DurationVar(&cfg.ExpiryGrace, "expiry-grace", time.Second, "a lease counts as expired only this long after its expires_at, so workers whose clocks run ahead by less never free a slot early")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error; debug logs one line per operation")
	fs.IntVar(&cfg.HealthConcurrency, "health-concurrency", 32, "health-check probes this worker runs at once (sweeps and admin.health.check together)")
	fs.BoolVar(&cfg.HealthSweeps, "health-sweeps", true, "take part in the health-check sweeps of pools whose health_check is enabled (false: only admin.health.check)")
	fs.StringVar(&cfg.CredentialsKeyFile, "credentials-key-file", "", "file of keys that encrypt proxy credentials in the proxies bucket, one per line (pharox keygen prints one): the first encrypts, all decrypt; the key itself may instead be in PHAROX_CREDENTIALS_KEY")
	fs.IntVar(&cfg.MaxLeasesPerConsumer, "max-leases-per-consumer", 0, "active leases one consumer may hold over every pool; an acquire over it gets 429 limit_reached (0: no limit)")
	fs.IntVar(&cfg.MaxWaiters, "max-waiters", 10000, "acquires waiting for a proxy (wait_seconds) on this worker at once; one more gets 503 unavailable at once")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "host:port serving /metrics (Prometheus), /healthz and /readyz; \"off\" for none; default: "+defaultMetricsListen+" with the embedded server, off with --nats-url")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: worker [flags]\n       worker rekey [flags]   (re-encrypt proxy credentials with the first key: worker rekey --help)\n       worker spread-leaders [flags]   (put the shards' stream leaders on different nodes: worker spread-leaders --help)\n\nServes the pharox leasing contract over NATS. With no flags it starts an embedded\nNATS server with JetStream on 127.0.0.1:4222 and keeps state under ./data.\n\n")
		printFlags(fs)
	}
	return fs
}

// printFlags lists the flags with their PHAROX_* twins.
func printFlags(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintf(out, "Every flag can also be set by the environment variable shown; a flag wins over it.\n\n")
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(out, "  --%s (env %s, default %q)\n      %s\n", f.Name, envName(f.Name), f.DefValue, f.Usage)
	})
}

// parseConfig reads the environment first and the arguments second, so that
// a flag given on the command line overrides its PHAROX_* variable.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	return parseWith(newFlagSet, args, getenv)
}

func parseWith(flags func(*config) *flag.FlagSet, args []string, getenv func(string) string) (config, error) {
	var cfg config
	fs := flags(&cfg)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cfg.set[f.Name] = true })
	cfg.NATS.LoadEnv(getenv)
	cfg.CredentialsKey = natsconn.Secret(getenv(EnvCredentialsKey))
	return cfg, cfg.validate()
}

func (c config) validate() error {
	switch {
	case c.Shards < 1 || c.Shards > 64:
		return fmt.Errorf("--shards must be 1..64 (the number of proxies buckets the pools are spread over), got %d", c.Shards)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("--replicas must be 1..5, got %d", c.Replicas)
	case c.MaxInflight < 1:
		return fmt.Errorf("--max-inflight must be positive, got %d", c.MaxInflight)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("--request-timeout must be positive, got %s", c.RequestTimeout)
	case c.MaxDuration < time.Second || c.MaxDuration > 24*time.Hour:
		return fmt.Errorf("--max-duration must be 1s..24h, got %s", c.MaxDuration)
	case c.LeaseRetention < time.Second:
		return fmt.Errorf("--lease-retention must be at least 1s, got %s", c.LeaseRetention)
	case c.ExpiryGrace < 0 || c.ExpiryGrace > time.Minute:
		return fmt.Errorf("--expiry-grace must be 0..1m, got %s", c.ExpiryGrace)
	case c.SweepInterval < 0:
		return fmt.Errorf("--sweep-interval must not be negative, got %s", c.SweepInterval)
	case c.HealthConcurrency < 1 || c.HealthConcurrency > 4096:
		return fmt.Errorf("--health-concurrency must be 1..4096, got %d", c.HealthConcurrency)
	case c.MaxLeasesPerConsumer < 0:
		return fmt.Errorf("--max-leases-per-consumer must be 0 (no limit) or positive, got %d", c.MaxLeasesPerConsumer)
	case c.MaxWaiters < 1:
		return fmt.Errorf("--max-waiters must be positive, got %d", c.MaxWaiters)
	case c.CredentialsKeyFile != "" && c.CredentialsKey != "":
		return fmt.Errorf("the credentials keys come from --credentials-key-file or %s, not both: drop one", EnvCredentialsKey)
	case c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, " *>\t"):
		return fmt.Errorf("--subject-prefix %q is not a valid subject token", c.SubjectPrefix)
	}
	if err := c.validateMetrics(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return c.validateNATS()
}

func envName(flagName string) string {
	return "PHAROX_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
