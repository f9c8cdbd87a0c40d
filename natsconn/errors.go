package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// ErrLoginRefused is matched (errors.Is) by a connect error whose cause is
// the server refusing the login: NATS's "Authorization Violation", or
// expired or revoked credentials.
var ErrLoginRefused = errors.New("NATS refused the login")

// ErrTLS is matched by a connect error whose cause is TLS: the server's
// certificate is not trusted, TLS is required, or a client certificate is
// missing or refused.
var ErrTLS = errors.New("TLS with the NATS server failed")

// ConnectError turns an error of nats.Connect to url into one that says
// what to change. The URL in the message is redacted.
func (s Settings) ConnectError(url string, err error) error {
	where := Redact(url)
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return &connectError{kind: ErrLoginRefused, err: err, msg: fmt.Sprintf(
			"NATS at %s refused the login (Authorization Violation) as %s: %s", where, s.Login, s.hint)}
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAccountAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return &connectError{kind: ErrLoginRefused, err: err, msg: fmt.Sprintf(
			"NATS at %s refused the login as %s: the credentials expired or were revoked", where, s.Login)}
	case errors.Is(err, nats.ErrSecureConnRequired):
		return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
			"NATS at %s requires TLS: give --%s (the CA that signed its certificate) or use a tls:// URL", where, FlagTLSCA)}
	case errors.Is(err, nats.ErrSecureConnWanted):
		return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
			"NATS at %s does not offer TLS, but TLS was asked for (a tls:// URL or --%s)", where, FlagTLSCA)}
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var verifyErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &verifyErr) && !errors.As(err, &hostErr):
		return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
			"NATS at %s presents a certificate this program does not trust: give --%s with the CA that signed it", where, FlagTLSCA)}
	case errors.As(err, &hostErr):
		return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
			"NATS at %s presents a certificate for another name: connect with a host name or IP address the certificate lists", where)}
	case strings.Contains(err.Error(), "certificate required"), strings.Contains(err.Error(), "bad certificate"),
		strings.Contains(err.Error(), "unknown certificate authority"),
		errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// TLS 1.3 finishes the client's handshake before the server checks
		// the client certificate, so a refusal may only show as a closed
		// connection.
		if s.clientCert {
			return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
				"NATS at %s refused the client certificate of %s: it must be signed by a CA the server trusts", where, s.Login)}
		}
		return &connectError{kind: ErrTLS, err: err, msg: fmt.Sprintf(
			"NATS at %s requires a client certificate signed by a CA it trusts: give --%s and --%s", where, FlagTLSCert, FlagTLSKey)}
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("no NATS server answers at %s (is it running, is the address right?): %w", where, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w", where, err)
}

// connectError carries a message for people, the error nats.go returned,
// and a kind for errors.Is.
type connectError struct {
	kind error
	err  error
	msg  string
}

func (e *connectError) Error() string   { return e.msg + " (" + e.err.Error() + ")" }
func (e *connectError) Unwrap() []error { return []error{e.kind, e.err} }
