// Package serveropts builds the options of the worker's embedded NATS
// server from its flags and an optional nats-server configuration file
// (read with the server's own parser, so accounts, users, permissions, TLS
// and JetStream encryption work as they do in nats-server), and refuses a
// server other machines can reach without logging in.
package serveropts

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults of the embedded server that a configuration file may change.
const (
	// MaxPayload leaves room for a 1 MiB proxies.add plus headers, so an
	// oversize body reaches the worker and gets the contract's 413.
	MaxPayload = 8 << 20
	ServerName = "pharox-embedded"
)

// Config is what the worker's flags say about its embedded server.
type Config struct {
	File       string // --nats-config: a nats-server configuration file
	Listen     string // --listen host:port
	ListenSet  bool   // --listen (or PHAROX_LISTEN) was given, so it wins over the file
	DataDir    string // --data-dir
	DataDirSet bool   // --data-dir (or PHAROX_DATA_DIR) was given
	TLSCert    string // --tls-cert: serve TLS on the client listener
	TLSKey     string // --tls-key
}

// Options returns the embedded server's options: the file's when one is
// given, then the flags:
//
//   - --listen given replaces the file's listen/host/port; not given, the
//     file's apply, and a file without them listens on the --listen default;
//   - --data-dir given replaces the file's jetstream store_dir; not given,
//     the file's applies, else the --data-dir default;
//   - JetStream is always on (the worker keeps its state there); max_payload
//     defaults to 8 MiB and server_name to pharox-embedded;
//   - --tls-cert/--tls-key serve TLS on the client listener (a file with a
//     tls block of its own is refused with them).
//
// It refuses a listener reachable from other machines on which no login is
// required (CheckExposure).
func Options(c Config) (*server.Options, error) {
	opts := &server.Options{}
	if c.File != "" {
		var err error
		if opts, err = server.ProcessConfigFile(c.File); err != nil {
			return nil, fmt.Errorf("--nats-config %s: %w", c.File, err)
		}
	}
	for _, u := range opts.Users {
		// An unset variable is refused by the parser; one set to "" is not,
		// and would let the user in with an empty password. (Users mapped
		// from client certificates have none.)
		if u.Password == "" && !opts.TLSMap {
			return nil, fmt.Errorf("--nats-config %s: user %q has an empty password (is its environment variable set?)", c.File, u.Username)
		}
	}
	if c.ListenSet || (opts.Host == "" && opts.Port == 0) {
		host, port, err := splitListen(c.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	if c.DataDirSet || opts.StoreDir == "" {
		opts.StoreDir = c.DataDir
	}
	opts.JetStream = true
	if opts.MaxPayload == 0 {
		opts.MaxPayload = MaxPayload
	}
	if opts.ServerName == "" {
		opts.ServerName = ServerName
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("TLS on the embedded server needs both --tls-cert and --tls-key")
	}
	if c.TLSCert != "" {
		if opts.TLSConfig != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key and the tls block of --nats-config %s both configure the listener's TLS: keep one", c.File)
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: c.TLSCert, KeyFile: c.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		opts.TLSConfig, opts.TLS = tc, true
		if opts.TLSTimeout == 0 {
			opts.TLSTimeout = 2
		}
	}
	// The worker handles signals and logs itself; the server logs nothing
	// (and so never a client's credentials).
	opts.NoSigs, opts.NoLog = true, true
	if err := CheckExposure(opts); err != nil {
		return nil, err
	}
	return opts, nil
}

func splitListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("--listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("--listen %q: port: %w", listen, err)
	}
	return host, port, nil
}

// listener is one port the server opens and whether it requires a login.
type listener struct {
	what, host string
	port       int
	auth       bool
}

// CheckExposure refuses options with a listener on an address other than
// loopback that lets clients in without a login: the client port,
// websocket, MQTT, leaf nodes, cluster routes, gateways.
func CheckExposure(o *server.Options) error {
	client := ClientAuthRequired(o)
	ls := []listener{{"client connections", o.Host, o.Port, client}}
	if o.Websocket.Port != 0 {
		ls = append(ls, listener{"websocket", o.Websocket.Host, o.Websocket.Port,
			o.Websocket.Username != "" || o.Websocket.Token != "" || (client && o.Websocket.NoAuthUser == "") || verifies(o.Websocket.TLSConfig)})
	}
	if o.MQTT.Port != 0 {
		ls = append(ls, listener{"MQTT", o.MQTT.Host, o.MQTT.Port,
			o.MQTT.Username != "" || o.MQTT.Token != "" || (client && o.MQTT.NoAuthUser == "") || verifies(o.MQTT.TLSConfig)})
	}
	if o.LeafNode.Port != 0 {
		ls = append(ls, listener{"leaf nodes", o.LeafNode.Host, o.LeafNode.Port,
			o.LeafNode.Username != "" || len(o.LeafNode.Users) > 0 || o.LeafNode.Nkey != "" || len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || verifies(o.LeafNode.TLSConfig)})
	}
	if o.Cluster.Port != 0 {
		ls = append(ls, listener{"cluster routes", o.Cluster.Host, o.Cluster.Port, o.Cluster.Username != "" || verifies(o.Cluster.TLSConfig)})
	}
	if o.Gateway.Port != 0 {
		ls = append(ls, listener{"gateways", o.Gateway.Host, o.Gateway.Port, o.Gateway.Username != "" || verifies(o.Gateway.TLSConfig)})
	}
	for _, l := range ls {
		if l.auth || IsLoopback(l.host) {
			continue
		}
		addr := net.JoinHostPort(orAll(l.host), strconv.Itoa(l.port))
		if l.what == "client connections" {
			return fmt.Errorf("refusing to listen on %s: that address is reachable from other machines and the embedded NATS server asks no login, "+
				"so anyone who reaches it could read every proxy's password, delete pools and pose as a worker. "+
				"Listen on loopback (--listen 127.0.0.1:%d), or require a login: --nats-config FILE with users and permissions "+
				"(deploy/nats-server.conf has pharox's roles, see README.md \"Security\")", addr, l.port)
		}
		return fmt.Errorf("refusing to open %s on %s: that address is reachable from other machines and the --nats-config file asks no login there; "+
			"add an authorization block (or verified TLS) for them, or bind them to 127.0.0.1", l.what, addr)
	}
	return nil
}

// ClientAuthRequired reports whether the client port asks every client to
// log in: users, nkeys, a token, a single user, an operator's JWTs, or
// verified client certificates, and no no_auth_user letting clients in
// without one.
func ClientAuthRequired(o *server.Options) bool {
	if o.NoAuthUser != "" {
		return false
	}
	return len(o.Users) > 0 || len(o.Nkeys) > 0 || o.Username != "" || o.Authorization != "" ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.CustomClientAuthentication != nil ||
		(o.TLSVerify && o.TLSConfig != nil)
}

// verifies reports whether a listener's TLS demands a client certificate
// signed by a trusted CA.
func verifies(tc *tls.Config) bool {
	return tc != nil && tc.ClientAuth == tls.RequireAndVerifyClientCert
}

// IsLoopback reports whether host is reachable from this machine only:
// localhost or a loopback IP. An empty host, 0.0.0.0 and :: are every
// interface; any other name may resolve to anything, so it counts as
// reachable.
func IsLoopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func orAll(host string) string {
	if host == "" {
		return "0.0.0.0"
	}
	return host
}
