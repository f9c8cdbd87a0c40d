// Package authtest makes the credentials NATS authentication tests need,
// for real servers: a certificate authority with server and client
// certificates, nkey users, and an operator/account/user JWT chain with a
// .creds file. Everything is generated in the test's temporary directory.
package authtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// WriteFile writes content to name in dir (0600) and returns its path.
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// PKI is a CA with a server certificate for 127.0.0.1 / localhost and a
// client certificate, as PEM files, plus a client certificate from a CA
// the server does not trust.
type PKI struct {
	CAFile                  string
	ServerCert, ServerKey   string
	ClientCert, ClientKey   string
	ForeignCert, ForeignKey string // signed by another CA
	ForeignCAFile           string
	caCert                  *x509.Certificate
	caKey                   *ecdsa.PrivateKey
	dir                     string
	foreignCA               *x509.Certificate
	foreignKey              *ecdsa.PrivateKey
	serial                  int64
}

// NewPKI generates the certificates (ECDSA P-256, valid for an hour).
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{dir: t.TempDir()}
	p.caCert, p.caKey, p.CAFile = p.newCA(t, "pharox test CA", "ca")
	p.foreignCA, p.foreignKey, p.ForeignCAFile = p.newCA(t, "some other CA", "foreign-ca")
	p.ServerCert, p.ServerKey = p.issue(t, "server", p.caCert, p.caKey, true)
	p.ClientCert, p.ClientKey = p.issue(t, "client", p.caCert, p.caKey, false)
	p.ForeignCert, p.ForeignKey = p.issue(t, "foreign-client", p.foreignCA, p.foreignKey, false)
	return p
}

// template is a certificate for common name cn with the PKI's next serial
// number, valid for an hour (from a minute ago, so clocks a little apart
// agree); newCA and issue set what it is for.
func (p *PKI) template(cn string) *x509.Certificate {
	p.serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
}

func (p *PKI) newCA(t testing.TB, cn, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key := newKey(t)
	tmpl := p.template(cn)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, p.writePEM(t, name+".pem", "CERTIFICATE", der)
}

func (p *PKI) issue(t testing.TB, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := p.template(name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.writePEM(t, name+"-cert.pem", "CERTIFICATE", der), p.writePEM(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

func (p *PKI) writePEM(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	return WriteFile(t, p.dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// ServerTLS is the server side: its certificate, and with verify, client
// certificates required and checked against the CA (mutual TLS).
func (p *PKI) ServerTLS(t testing.TB, verify bool) *tls.Config {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.ServerCert, KeyFile: p.ServerKey, CaFile: p.CAFile, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// NKeyUser generates an nkey user and writes its seed to a file.
func NKeyUser(t testing.TB) (seedFile, publicKey string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	return WriteFile(t, t.TempDir(), "user.nk", string(seed)+"\n"), pub
}

// Operator is a decentralised-auth set-up: an operator, one account with
// JetStream, a user of it with a .creds file, and a .creds file of a user
// signed by an account the server does not know.
type Operator struct {
	Claims       *jwt.OperatorClaims
	AccountPub   string
	AccountJWT   string
	CredsFile    string
	ForeignCreds string

	systemPub, systemJWT string
}

// NewOperator generates the chain.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	dir := t.TempDir()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	// JetStream needs a system account.
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "pharox-test"
	oc.SystemAccount = spub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "pharox"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	o := &Operator{Claims: oclaims, AccountPub: apub, AccountJWT: ajwt, systemPub: spub, systemJWT: sjwt}
	o.CredsFile = WriteFile(t, dir, "user.creds", userCreds(t, akp, "crawler"))
	foreign, _ := nkeys.CreateAccount()
	o.ForeignCreds = WriteFile(t, dir, "foreign.creds", userCreds(t, foreign, "stranger"))
	return o
}

func userCreds(t testing.TB, account nkeys.KeyPair, name string) string {
	t.Helper()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return string(creds)
}

// Apply makes opts trust the operator and know its account.
func (o *Operator) Apply(t testing.TB, opts *server.Options) {
	t.Helper()
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(o.AccountPub, o.AccountJWT); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Store(o.systemPub, o.systemJWT); err != nil {
		t.Fatal(err)
	}
	opts.SystemAccount = o.systemPub
	opts.TrustedOperators = []*jwt.OperatorClaims{o.Claims}
	opts.AccountResolver = resolver
}

// RunServer starts opts (on a random loopback port unless set, logging
// nothing, with JetStream in a temporary directory when enabled) and stops
// it with the test.
func RunServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	return runServer(t, opts, nil)
}

func runServer(t testing.TB, opts *server.Options, log server.Logger) *server.Server {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = -1
	}
	if opts.JetStream && opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("NATS server: %v", err)
	}
	if log != nil {
		s.SetLoggerV2(log, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready in 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// ServerLog records what a server logs at warning and error level, such as
// "Publish Violation" lines naming the user.
type ServerLog struct {
	mu    sync.Mutex
	lines []string
}

// Lines returns what was logged so far.
func (l *ServerLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Violations returns the permission violations logged so far.
func (l *ServerLog) Violations() []string {
	var out []string
	for _, line := range l.Lines() {
		if strings.Contains(line, "Violation") {
			out = append(out, line)
		}
	}
	return out
}

func (l *ServerLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *ServerLog) Noticef(string, ...any)         {}
func (l *ServerLog) Debugf(string, ...any)          {}
func (l *ServerLog) Tracef(string, ...any)          {}
func (l *ServerLog) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *ServerLog) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *ServerLog) Fatalf(format string, v ...any) { l.add(format, v...) }

// RunServerLogged is RunServer with the server's warnings and errors
// recorded.
func RunServerLogged(t testing.TB, opts *server.Options) (*server.Server, *ServerLog) {
	t.Helper()
	log := &ServerLog{}
	return runServer(t, opts, log), log
}

// Passwords the tests give the roles of deploy/nats-server.conf.
const (
	WorkerPassword = "worker-pw-7Qe2"
	AdminPassword  = "admin-pw-9Kd4"
	LeaserPassword = "leaser-pw-3Xb8"
)

// DeployOptions loads the shipped deploy/nats-server.conf (path relative to
// the test's package) with the server's own parser, its passwords set by
// the environment (so the test cannot run in parallel), on a random
// loopback port with JetStream in a temporary directory.
func DeployOptions(t *testing.T, path string) *server.Options {
	t.Helper()
	t.Setenv("NATS_WORKER_PASSWORD", WorkerPassword)
	t.Setenv("NATS_ADMIN_PASSWORD", AdminPassword)
	t.Setenv("NATS_LEASER_PASSWORD", LeaserPassword)
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	opts.Host, opts.Port, opts.StoreDir = "127.0.0.1", -1, t.TempDir()
	return opts
}

// AddLeaser adds a user with the leaser role of the shipped config and its
// own inbox prefix _INBOX_<name>, as the config's comments tell operators
// to do for each leasing program.
func AddLeaser(t testing.TB, opts *server.Options, name, password string) {
	t.Helper()
	for _, u := range opts.Users {
		if u.Username != "leaser" {
			continue
		}
		p := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: append([]string(nil), u.Permissions.Publish.Allow...)},
			Subscribe: &server.SubjectPermission{},
		}
		for _, s := range u.Permissions.Subscribe.Allow {
			if s == "_INBOX_leaser.>" {
				s = "_INBOX_" + name + ".>"
			}
			p.Subscribe.Allow = append(p.Subscribe.Allow, s)
		}
		opts.Users = append(opts.Users, &server.User{Username: name, Password: password, Permissions: p})
		return
	}
	t.Fatal("the config has no leaser user")
}
