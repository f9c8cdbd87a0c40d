package natsconn

import (
	"net/url"
	"strings"
)

// redacted replaces credentials in URLs.
const redacted = "xxxxx"

// Redact hides the credentials of every URL in a comma-separated list:
// nats://user:pass@host becomes nats://user:xxxxx@host and nats://TOKEN@host
// becomes nats://xxxxx@host. nats.go's ConnectedUrlRedacted (url.Redacted)
// hides only a password, so it prints a token; use Redact for anything
// logged. A URL that does not parse loses everything before its last '@'.
func Redact(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.User == nil || u.Host == "" {
		// No scheme (user:pass@host), or not a URL at all: keep the scheme
		// if there is one, drop what may be credentials.
		scheme := ""
		if i := strings.Index(raw, "://"); i >= 0 && i < at {
			scheme = raw[:i+3]
		}
		return scheme + redacted + raw[at:]
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else {
		u.User = url.User(redacted) // a token
	}
	return u.String()
}
