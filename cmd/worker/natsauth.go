package main

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pharox/pharox-nats/internal/serveropts"
	"github.com/pharox/pharox-nats/natsconn"
)

// validateNATS checks the connection and embedded-server flags together:
// client login flags need a server that has users (--nats-url, or the
// embedded one with --nats-config); server flags need the embedded server.
func (c config) validateNATS() error {
	if err := c.NATS.Check(); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("TLS on the embedded server needs both --tls-cert and --tls-key")
	}
	if c.NATS.URL != "" {
		switch {
		case c.NATSConfig != "":
			return fmt.Errorf("--nats-config configures the embedded server, which does not start with --nats-url: drop one of them")
		case c.TLSCert != "":
			return fmt.Errorf("--tls-cert/--tls-key serve TLS on the embedded server, which does not start with --nats-url; the worker's client certificate is --%s/--%s", natsconn.FlagTLSCert, natsconn.FlagTLSKey)
		}
		return nil
	}
	if tls := clientTLSFlags(c.NATS); len(tls) > 0 {
		return fmt.Errorf("%s: the worker talks to its embedded server in-process, without TLS; these are for --nats-url (the embedded server's own certificate is --tls-cert/--tls-key)", strings.Join(tls, ", "))
	}
	if c.NATS.HasLogin() && c.NATSConfig == "" {
		return fmt.Errorf("%s: the embedded server has no users to log in as; give --nats-url to join a NATS deployment, or --nats-config FILE whose users include this one (deploy/nats-server.conf has the worker role)",
			strings.Join(c.NATS.LoginFlags(), ", "))
	}
	return nil
}

func clientTLSFlags(n natsconn.Config) []string {
	var out []string
	for _, f := range []struct{ v, name string }{{n.TLSCA, natsconn.FlagTLSCA}, {n.TLSCert, natsconn.FlagTLSCert}, {n.TLSKey, natsconn.FlagTLSKey}} {
		if f.v != "" {
			out = append(out, "--"+f.name)
		}
	}
	return out
}

// embeddedOptions are the embedded server's options: --nats-config, then
// --listen, --data-dir and --tls-cert/--tls-key (serveropts.Options says
// how they combine). A listener other machines can reach is refused unless
// the server requires a login.
func embeddedOptions(c config) (*server.Options, error) {
	return serveropts.Options(serveropts.Config{
		File:       c.NATSConfig,
		Listen:     c.Listen,
		ListenSet:  c.set["listen"],
		DataDir:    c.DataDir,
		DataDirSet: c.set["data-dir"],
		TLSCert:    c.TLSCert,
		TLSKey:     c.TLSKey,
	})
}
