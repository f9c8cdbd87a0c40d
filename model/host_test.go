package model_test

import (
	"strings"
	"testing"

	"github.com/pharox/pharox-nats/model"
)

func TestValidHost(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	long := strings.TrimSuffix(strings.Repeat(label63+".", 4), ".") // 255 characters
	cases := map[string]bool{
		"proxy.example.com":     true,
		"localhost":             true,
		"h":                     true,
		"a-b.c-d.io":            true,
		"xn--bcher-kva.example": true,
		"1password.com":         true,
		"10.0.0.1":              true,
		"255.255.255.255":       true,
		"2001:db8::1":           true,
		"::1":                   true,
		"::ffff:192.0.2.1":      true,
		label63 + ".com":        true,
		"bad host":              false,
		"":                      false,
		"-a.com":                false,
		"a-.com":                false,
		"a..com":                false,
		".a.com":                false,
		"a.com.":                false,
		"a_b.com":               false,
		"ex@mple.com":           false,
		"http://a.com":          false,
		"a.com:8080":            false,
		"[2001:db8::1]":         false,
		"fe80::1%eth0":          false,
		"2001:db8:::1":          false,
		"256.1.1.1":             false,
		"1.2.3":                 false,
		"010.1.1.1":             false,
		strings.Repeat("a", 64): false,
		long:                    false,
		"ünïcode.com":           false,
	}
	cases[long[:253]] = true // 4 labels of 63, 63, 63, 61 letters: 253 characters
	for host, want := range cases {
		if got := model.ValidHost(host); got != want {
			t.Errorf("ValidHost(%q) = %v, want %v", host, got, want)
		}
	}
	err := model.CheckHost("proxies[0].host", "bad host")
	if err == nil || !strings.Contains(err.Error(), `proxies[0].host`) || !strings.Contains(err.Error(), `"bad host"`) {
		t.Fatalf("CheckHost: %v", err)
	}
}
