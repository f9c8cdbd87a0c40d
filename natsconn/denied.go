package natsconn

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"
)

// ErrPermissionDenied is matched (errors.Is) by the errors Denied returns.
var ErrPermissionDenied = errors.New("NATS permission denied")

// violationRE picks the operation and subject out of the server's
// "Permissions Violation for Publish to "x"" (or "Subscription to").
var violationRE = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "?([^"\s]+)"?`)

// Denied turns a permissions violation, which the server reports on the
// connection's error handler (a refused request publish just times out),
// into an error that says what is missing. It returns nil for any other
// error.
func Denied(err error) error {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	m := violationRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &deniedError{err: err, msg: "the NATS server refused an operation of this program's user (Permissions Violation)"}
	}
	op, subject := strings.ToLower(m[1]), m[2]
	msg := fmt.Sprintf("the NATS user this program logs in as may not %s %q (Permissions Violation)", verb(op), subject)
	switch {
	case op == "subscription" && strings.HasPrefix(subject, "_INBOX"):
		msg += fmt.Sprintf(": its replies arrive on an inbox it may not read; set --%s (%s) to the inbox prefix the user may subscribe to, e.g. _INBOX_<user>",
			FlagInboxPrefix, EnvName(FlagInboxPrefix))
	case op == "publish" && (strings.Contains(subject, ".admin.") || strings.HasSuffix(subject, ".cleanup")):
		msg += ": administration needs a user with pharox's admin role"
	case op == "publish" && strings.HasPrefix(subject, "$JS.API."):
		msg += ": reading the event stream needs the JetStream API of PHAROX_EVENTS (pharox's leaser role)"
	}
	return &deniedError{err: err, msg: msg}
}

func verb(op string) string {
	if op == "publish" {
		return "publish to"
	}
	return "subscribe to"
}

type deniedError struct {
	err error
	msg string
}

func (e *deniedError) Error() string   { return e.msg }
func (e *deniedError) Unwrap() []error { return []error{ErrPermissionDenied, e.err} }
