package credkey

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// LoadFile reads a key file: one key per line (the standard base64 of 32
// bytes, as Generate makes), the first one sealing; blank lines and lines
// starting with # are skipped. Errors name the file and the line, never
// the key.
func LoadFile(path string) (*Ring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials key file: %w", err)
	}
	var items []item
	for i, line := range strings.Split(string(data), "\n") {
		items = append(items, item{where: fmt.Sprintf("line %d of %s", i+1, path), text: line})
	}
	r, err := parse(items)
	if err != nil {
		return nil, fmt.Errorf("credentials key file %s: %w", path, err)
	}
	return r, nil
}

// ParseList reads keys from a variable's value (source names it in
// errors): one key, or several separated by commas or white space, the
// first one sealing.
func ParseList(value, source string) (*Ring, error) {
	fields := strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	var items []item
	for i, f := range fields {
		items = append(items, item{where: fmt.Sprintf("key %d of %s", i+1, source), text: f})
	}
	r, err := parse(items)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return r, nil
}

type item struct{ where, text string }

func parse(items []item) (*Ring, error) {
	var raw [][]byte
	var where []string
	for _, it := range items {
		s := strings.TrimSpace(it.text)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			var ce base64.CorruptInputError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("%s is not base64 (bad character or padding at offset %d): a key is the standard base64 of %d random bytes, as `pharox keygen` prints it", it.where, int64(ce), KeySize)
			}
			return nil, fmt.Errorf("%s is not base64: a key is the standard base64 of %d random bytes, as `pharox keygen` prints it", it.where, KeySize)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("%s decodes to %d bytes; a key is %d bytes (the standard base64 of %d random bytes, as `pharox keygen` prints it)", it.where, len(k), KeySize, KeySize)
		}
		for i, prev := range raw {
			if keyID(prev) == keyID(k) {
				return nil, fmt.Errorf("%s is the same key as %s", it.where, where[i])
			}
		}
		raw = append(raw, k)
		where = append(where, it.where)
	}
	if len(raw) == 0 {
		return nil, errors.New("no key in it (one key per line, as `pharox keygen` prints it)")
	}
	return NewRing(raw...)
}
