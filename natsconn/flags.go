package natsconn

import "fmt"

// FlagSet is what AddFlags needs of a flag set: the standard library's
// *flag.FlagSet and spf13/pflag's *pflag.FlagSet both have it.
type FlagSet interface {
	StringVar(p *string, name, value, usage string)
}

// FlagOption changes what AddFlags declares.
type FlagOption func(*flagOptions)

type flagOptions struct {
	urlUsage string
	context  bool
	getenv   func(string) string
}

// WithURLUsage replaces the help text of --nats-url.
func WithURLUsage(usage string) FlagOption {
	return func(o *flagOptions) { o.urlUsage = usage }
}

// WithContextFlag adds --context NAME and makes the `nats` CLI's selected
// context the default when no --nats-url is given (the pharox CLI).
func WithContextFlag() FlagOption {
	return func(o *flagOptions) { o.context = true }
}

// WithEnvDefaults takes each flag's default from its PHAROX_* twin, for flag
// packages that do not read the environment themselves (cobra). The worker
// sets its flags from the environment on its own and does not need it.
func WithEnvDefaults(getenv func(string) string) FlagOption {
	return func(o *flagOptions) { o.getenv = getenv }
}

// AddFlags declares the connection flags on fs, bound to c. There is no flag
// for a password or a token: they come from PHAROX_NATS_PASSWORD /
// PHAROX_NATS_TOKEN (LoadEnv) or from --nats-password-file /
// --nats-token-file.
func (c *Config) AddFlags(fs FlagSet, opts ...FlagOption) {
	o := flagOptions{urlUsage: "NATS server URL, comma-separated for a cluster"}
	for _, opt := range opts {
		opt(&o)
	}
	c.contexts = o.context
	def := func(name string) string {
		if o.getenv == nil {
			return ""
		}
		return o.getenv(EnvName(name))
	}
	add := func(p *string, name, usage string) {
		if o.getenv != nil {
			usage = fmt.Sprintf("%s (env %s)", usage, EnvName(name))
		}
		fs.StringVar(p, name, def(name), usage)
	}
	add(&c.URL, FlagURL, o.urlUsage)
	add(&c.Creds, FlagCreds, "NATS credentials file (user JWT and nkey seed)")
	add(&c.NKey, FlagNKey, "file holding an nkey user seed (SU...) to log in with")
	add(&c.User, FlagUser, "NATS user name; the password comes from "+EnvPassword+" or --"+FlagPasswordFile)
	add(&c.PasswordFile, FlagPasswordFile, "file holding the password of --"+FlagUser+" (instead of "+EnvPassword+")")
	add(&c.TokenFile, FlagTokenFile, "file holding a NATS token (instead of "+EnvToken+")")
	add(&c.TLSCA, FlagTLSCA, "PEM file of the CA that signed the NATS server's certificate")
	add(&c.TLSCert, FlagTLSCert, "PEM client certificate for mutual TLS (with --"+FlagTLSKey+")")
	add(&c.TLSKey, FlagTLSKey, "PEM private key of --"+FlagTLSCert)
	add(&c.InboxPrefix, FlagInboxPrefix, "subject prefix of this program's reply inboxes (default _INBOX); a NATS user limited to its own inbox needs its prefix, e.g. _INBOX_crawler1")
	if o.context {
		add(&c.Context, FlagContext, "use this `nats` CLI context (default: the selected one, when no --"+FlagURL+" is given); flags override its settings")
	}
}
