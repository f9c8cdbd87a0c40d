package gateway

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/pharox/pharox-nats/model"
)

// Token is one client token and what it may do.
type Token struct {
	sum [sha256.Size]byte
	// Pools it may lease from (none: any).
	Pools []string
	// Consumer it leases as (empty: the one the username or the gateway
	// names).
	Consumer string
}

// Tokens is the set of client tokens. The zero value has none: the gateway
// then asks for no credentials.
type Tokens struct {
	list []Token
}

// Len is the number of tokens.
func (ts *Tokens) Len() int {
	if ts == nil {
		return 0
	}
	return len(ts.list)
}

// ParseTokens reads tokens, one per line: the token, then optionally
// pools=a|b and consumer=name, separated by spaces or tabs. Blank lines and
// lines starting with # are skipped; ";" also ends a line, so that
// PHAROX_GATEWAY_TOKENS can hold several on one line.
func ParseTokens(r io.Reader) (*Tokens, error) {
	ts := &Tokens{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		for _, line := range strings.Split(sc.Text(), ";") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			t, err := parseToken(line)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			ts.list = append(ts.list, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ts, nil
}

// Add appends the tokens of other.
func (ts *Tokens) Add(other *Tokens) {
	if other != nil {
		ts.list = append(ts.list, other.list...)
	}
}

func parseToken(line string) (Token, error) {
	fields := strings.Fields(line)
	t := Token{sum: sha256.Sum256([]byte(fields[0]))}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pools":
			for _, p := range strings.Split(v, "|") {
				if !model.ValidName(p) {
					return t, fmt.Errorf("pools: %q is not a pool name", p)
				}
				t.Pools = append(t.Pools, p)
			}
		case "consumer":
			if !model.ValidName(v) {
				return t, fmt.Errorf("consumer: %q is not a consumer name", v)
			}
			t.Consumer = v
		default:
			return t, fmt.Errorf("%q: after the token only pools=a|b and consumer=name may follow", f)
		}
	}
	return t, nil
}

// match returns the token equal to secret. Every token is compared, each in
// constant time over fixed-length digests, so the time taken says nothing
// about which token, or which part of one, matched.
func (ts *Tokens) match(secret string) (*Token, bool) {
	sum := sha256.Sum256([]byte(secret))
	found := -1
	for i := range ts.list {
		if subtle.ConstantTimeCompare(sum[:], ts.list[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, false
	}
	return &ts.list[found], true
}

// allows reports whether t may lease from pool as consumer.
func (t *Token) allows(pool, consumer string) error {
	if t == nil {
		return nil
	}
	if len(t.Pools) > 0 && !slices.Contains(t.Pools, pool) {
		return fmt.Errorf("this token may not lease from pool %q", pool)
	}
	if t.Consumer != "" && consumer != t.Consumer {
		return fmt.Errorf("this token may not lease as consumer %q", consumer)
	}
	return nil
}
