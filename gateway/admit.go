package gateway

import (
	"encoding/base64"
	"errors"
	"strings"
)

// authenticate checks a client's credentials: with tokens configured the
// password must be one of them (407 otherwise); without, anything goes.
func (g *Gateway) authenticate(hasCreds bool, password string) (*Token, *Error) {
	if g.tokens.Len() == 0 {
		return nil, nil
	}
	if !hasCreds {
		return nil, errAuth("credentials required: the username is the lease request, the password a gateway token")
	}
	t, ok := g.tokens.match(password)
	if !ok {
		return nil, errAuth("wrong token")
	}
	return t, nil
}

// resolve reads a username into what to lease, with the gateway's defaults
// and within what tok allows.
func (g *Gateway) resolve(username string, tok *Token) (*spec, *Error) {
	r, err := parseUsername(username)
	if err != nil {
		return nil, errBadRequest("bad_username", err)
	}
	sp := &spec{pool: r.pool, consumer: r.consumer, protocols: r.protocols, selector: r.selector,
		session: r.session, sesstime: r.sesstime, wait: r.wait}
	if sp.pool == "" {
		sp.pool = g.pool
	}
	if sp.pool == "" {
		return nil, errBadRequest("bad_username", errors.New("username: no pool: name one with pool=NAME (or start the gateway with --pool)"))
	}
	if sp.consumer == "" && tok != nil {
		sp.consumer = tok.Consumer
	}
	if sp.consumer == "" {
		sp.consumer = g.consumer
	}
	if err := tok.allows(sp.pool, sp.consumer); err != nil {
		return nil, errForbidden(err)
	}
	if f := r.filters; f.Country != nil || f.City != nil || f.Source != nil || f.ISP != nil || f.ASN != nil {
		sp.filters = &f
	}
	if sp.session != "" && sp.sesstime == 0 {
		sp.sesstime = DefaultSessionSeconds
	}
	if sp.session == "" && sp.sesstime != 0 {
		return nil, errBadRequest("bad_username", errors.New("username: sesstime needs session"))
	}
	return sp, nil
}

// basicAuth reads a Proxy-Authorization header: Basic base64(user:pass).
func basicAuth(header string) (user, pass string, ok bool) {
	scheme, cred, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	return user, pass, ok
}
