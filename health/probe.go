package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/proxydial"
)

// maxBody is how much of the target's answer a probe reads (pharox's client
// reads the body; a huge one should not make a proxy look slow or hold a
// probe slot).
const maxBody = 1 << 20

// userAgent is sent unless the options' headers name another.
const userAgent = "pharox-nats-health/1"

// Prober probes proxies: one GET of the target URL through the proxy, in the
// proxy's protocol, per attempt.
//
//   - http: the proxy as an HTTP forward proxy (net/http's Transport with
//     Proxy set): an http target is fetched with an absolute-URI GET, an
//     https target through a CONNECT tunnel.
//   - https: the proxy as a CONNECT (tunnelling) proxy, which is what proxy
//     lists mean by an HTTPS proxy: an https target goes through net/http's
//     own CONNECT; an http target through a CONNECT tunnel too, so that the
//     check exercises what the proxy is listed for.
//   - socks5: golang.org/x/net/proxy's SOCKS5 client (RFC 1928), with
//     username/password authentication (RFC 1929) when the proxy has
//     credentials; host names are resolved by the proxy.
//   - socks4: SOCKS4, or SOCKS4a for a host name (see proxydial); the
//     credentials' user is sent as the SOCKS4 user id (SOCKS4 has no
//     password).
//
// Every connection is fresh (no keep-alive), so each attempt measures the
// whole path. Environment proxy settings are never used.
type Prober struct {
	tls    *tls.Config
	dialer *net.Dialer
	dial   *proxydial.Dialer
}

// NewProber returns a prober. tlsConfig verifies https targets (nil: the
// system's roots).
func NewProber(tlsConfig *tls.Config) *Prober {
	d := &net.Dialer{KeepAlive: -1}
	return &Prober{tls: tlsConfig, dialer: d, dial: &proxydial.Dialer{Forward: d}}
}

// Probe checks px against the target of o (which must be valid, see
// Validate) and returns pharox's HealthCheckResult: active when an attempt
// got an expected status code within slow_threshold_ms, slow when it got one
// later than that, inactive when every attempt failed. Attempts stop at the
// first success; attempts, latency_ms, status_code and error_message
// describe the last attempt made. ctx ending stops the probe (inactive).
func (p *Prober) Probe(ctx context.Context, px model.Proxy, o model.HealthCheckOptions) model.HealthCheckResult {
	res := model.HealthCheckResult{ProxyID: px.ID, Status: model.ProxyInactive, Protocol: px.Protocol, Attempts: 1}
	fail := func(msg string) model.HealthCheckResult {
		msg = scrub(msg, px.Credentials)
		res.ErrorMessage = &msg
		res.CheckedAt = time.Now().UTC()
		return res
	}
	target, err := url.Parse(o.TargetURL)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") {
		return fail(fmt.Sprintf("target_url %q is not an http or https URL", o.TargetURL))
	}
	tr, err := p.transport(px, target)
	if err != nil {
		return fail(err.Error())
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	if !o.AllowRedirects {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	attempts := max(o.Attempts, 1)
	timeout := attemptTimeout(o)
	for attempt := 1; attempt <= attempts; attempt++ {
		res.Attempts = attempt
		code, took, err := p.once(ctx, client, o, timeout)
		res.LatencyMs = float64(took) / float64(time.Millisecond)
		res.StatusCode = nil
		if code != 0 {
			c := code
			res.StatusCode = &c
		}
		var msg string
		switch {
		case err == nil && slices.Contains(o.ExpectedStatusCodes, code):
			res.Status = model.ProxyActive
			if res.LatencyMs > o.SlowThresholdMs {
				res.Status = model.ProxySlow
			}
			res.ErrorMessage = nil
			res.CheckedAt = time.Now().UTC()
			return res
		case err == nil && code == http.StatusProxyAuthRequired:
			msg = "proxy authentication failed: 407 Proxy Authentication Required"
		case err == nil:
			msg = fmt.Sprintf("unexpected status code %d (expected %s)", code, codes(o.ExpectedStatusCodes))
		default:
			msg = describe(ctx, err, timeout)
		}
		msg = scrub(msg, px.Credentials)
		res.ErrorMessage = &msg
		if ctx.Err() != nil {
			break
		}
	}
	res.Status = model.ProxyInactive
	res.CheckedAt = time.Now().UTC()
	return res
}

// once makes one attempt: the status code (0 when none came), how long the
// request and the body took, and what went wrong.
func (p *Prober) once(ctx context.Context, client *http.Client, o model.HealthCheckOptions, timeout time.Duration) (int, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, o.TargetURL, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("User-Agent", userAgent)
	for k, v := range o.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, time.Since(start), err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return resp.StatusCode, took, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, took, nil
}

// transport builds a one-probe transport that reaches targets through px.
func (p *Prober) transport(px model.Proxy, target *url.URL) (*http.Transport, error) {
	addr := net.JoinHostPort(px.Host, strconv.Itoa(px.Port))
	tr := &http.Transport{
		Proxy:                  nil, // never the environment's
		DialContext:            p.dialer.DialContext,
		TLSClientConfig:        p.tlsConfig(),
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	up := proxydial.FromProxy(px)
	switch px.Protocol {
	case model.ProtocolHTTP, model.ProtocolHTTPS:
		if px.Protocol == model.ProtocolHTTPS && target.Scheme == "http" {
			tr.DialContext = p.dial.ContextDialer(up)
			break
		}
		pu := &url.URL{Scheme: "http", Host: addr}
		if c := px.Credentials; c != nil {
			pu.User = url.UserPassword(c.User, c.Password)
		}
		tr.Proxy = http.ProxyURL(pu)
	case model.ProtocolSOCKS5, model.ProtocolSOCKS4:
		tr.DialContext = p.dial.ContextDialer(up)
	default:
		return nil, fmt.Errorf("protocol %q cannot be probed", px.Protocol)
	}
	return tr, nil
}

func (p *Prober) tlsConfig() *tls.Config {
	if p.tls == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return p.tls.Clone()
}

// describe words a failed attempt for error_message.
func describe(ctx context.Context, err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return "check stopped before an answer: " + ctx.Err().Error()
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Sprintf("timeout: no answer within %s (%v)", timeout, err)
	case strings.Contains(err.Error(), "Proxy Authentication Required"),
		strings.Contains(err.Error(), "username/password authentication failed"),
		strings.Contains(err.Error(), "no acceptable authentication methods"):
		return "proxy authentication failed: " + err.Error()
	}
	return err.Error()
}

// scrub keeps a proxy's password out of a message.
func scrub(msg string, c *model.Credentials) string {
	if c == nil || c.Password == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, c.Password, "***")
	if esc := url.QueryEscape(c.Password); esc != c.Password {
		msg = strings.ReplaceAll(msg, esc, "***")
	}
	if esc := url.PathEscape(c.Password); esc != c.Password {
		msg = strings.ReplaceAll(msg, esc, "***")
	}
	return msg
}

func codes(cs []int) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, ", ")
}
