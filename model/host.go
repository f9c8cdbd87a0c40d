package model

import (
	"net/netip"
	"strings"
)

// MaxHostLen bounds a proxy's host: a DNS name is at most 253 characters.
const MaxHostLen = 253

// ValidHost reports whether s names a proxy's host as the contract's URLs
// need it: a host name of RFC 1123 labels (letters, digits and hyphens,
// 1..63 each, not starting or ending with a hyphen, dot-separated, at most
// 253 characters, not ending in an all-numeric label, which would read as
// a bad IPv4 address), an IPv4 address in dotted decimal, or an IPv6
// address without brackets or zone.
func ValidHost(s string) bool {
	if s == "" || len(s) > MaxHostLen {
		return false
	}
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Zone() == ""
	}
	if strings.Contains(s, ":") {
		return false // an IPv6 address that did not parse
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !validLabel(l) {
			return false
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// CheckHost returns a bad-request error naming field unless s is a valid
// host (ValidHost).
func CheckHost(field, s string) error {
	if !ValidHost(s) {
		return Errorf(ErrBadRequest, "%s must be a host name (RFC 1123 labels: letters, digits, hyphens), an IPv4 or an IPv6 address, at most %d characters, got %q", field, MaxHostLen, s)
	}
	return nil
}
