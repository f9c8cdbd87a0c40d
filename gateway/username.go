package gateway

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/pharox/pharox-nats/model"
)

// Bounds of the username's keys.
const (
	DefaultSessionSeconds = 300
	maxSessionSeconds     = model.MaxDurationSeconds
	maxSessionLen         = 256
)

// request is what a client's username asks for, before the gateway's
// defaults and the token's limits are applied.
type request struct {
	pool, consumer string
	filters        model.ProxyFilters
	protocols      []model.Protocol
	selector       *model.Selector
	session        string
	sesstime       int     // seconds; 0: not given
	wait           float64 // seconds
}

// parseUsername reads comma-separated key=value pairs. A value holding
// ",", "=" or "%" is percent-encoded; values are decoded after splitting
// (any %XX is decoded, so ":" may be written %3A in an HTTP username).
func parseUsername(s string) (request, error) {
	var r request
	if s == "" {
		return r, nil
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(s, ",") {
		key, raw, ok := strings.Cut(pair, "=")
		if !ok {
			return r, fmt.Errorf("username: %q is not key=value (the username is comma-separated key=value pairs, e.g. pool=latam,country=AR)", pair)
		}
		if strings.Contains(raw, "=") {
			return r, fmt.Errorf("username: the value of %s holds a raw \"=\"; write it %%3D", key)
		}
		if seen[key] {
			return r, fmt.Errorf("username: key %s is given twice", key)
		}
		seen[key] = true
		v, err := url.PathUnescape(raw)
		if err != nil {
			return r, fmt.Errorf("username: the value of %s is not valid percent-encoding: %q", key, raw)
		}
		if v == "" {
			return r, fmt.Errorf("username: %s has an empty value", key)
		}
		if err := r.set(key, v); err != nil {
			return r, fmt.Errorf("username: %w", err)
		}
	}
	return r, nil
}

func (r *request) set(key, v string) error {
	str := func(p **string) { s := v; *p = &s }
	switch key {
	case "pool":
		if !model.ValidName(v) {
			return fmt.Errorf("pool must match ^[A-Za-z0-9_-]{1,128}$, got %q", v)
		}
		r.pool = v
	case "consumer":
		if !model.ValidName(v) {
			return fmt.Errorf("consumer must match ^[A-Za-z0-9_-]{1,128}$, got %q", v)
		}
		r.consumer = v
	case "country":
		str(&r.filters.Country)
	case "city":
		str(&r.filters.City)
	case "source":
		str(&r.filters.Source)
	case "isp":
		str(&r.filters.ISP)
	case "asn":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("asn must be an integer, got %q", v)
		}
		r.filters.ASN = &n
	case "protocol":
		for _, p := range strings.Split(v, "|") {
			if !model.Protocol(p).Valid() {
				return fmt.Errorf("protocol must be http, https, socks4 or socks5 (several joined by |), got %q", p)
			}
			r.protocols = append(r.protocols, model.Protocol(p))
		}
	case "selector":
		s := model.Selector(v)
		if !s.Valid() {
			return fmt.Errorf("selector must be first_available, least_used, round_robin or random, got %q", v)
		}
		r.selector = &s
	case "session":
		if len(v) > maxSessionLen {
			return fmt.Errorf("session must be at most %d bytes, got %d", maxSessionLen, len(v))
		}
		r.session = v
	case "sesstime":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSessionSeconds {
			return fmt.Errorf("sesstime must be whole seconds in 1..%d, got %q", maxSessionSeconds, v)
		}
		r.sesstime = n
	case "wait":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > model.MaxWaitSeconds {
			return fmt.Errorf("wait must be seconds in 0..%d, got %q", model.MaxWaitSeconds, v)
		}
		r.wait = f
	default:
		return fmt.Errorf("unknown key %q (keys: pool, consumer, country, city, source, isp, asn, protocol, selector, session, sesstime, wait)", key)
	}
	return nil
}

// spec is a request resolved against the gateway's defaults and the
// client's token: what the gateway will lease.
type spec struct {
	pool, consumer string
	filters        *model.ProxyFilters
	protocols      []model.Protocol
	selector       *model.Selector
	session        string
	sesstime       int
	wait           float64
}
