package model

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every subject when none is configured.
const DefaultPrefix = "pharox"

// CheckPrefix refuses a subject prefix that cannot start a NATS subject
// a client can address: empty, or with whitespace or a wildcard.
func CheckPrefix(p string) error {
	if p == "" || strings.ContainsAny(p, " \t\r\n*>") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
		return fmt.Errorf("subject prefix %q is not a valid subject: use letters, digits, '-' or '_', tokens separated by '.'", p)
	}
	return nil
}
