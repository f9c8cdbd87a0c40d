package docs_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// example is one documented request and the reply shown for it.
type example struct {
	where   string
	subject string
	body    string
	reply   string
	// status and code are set for an error reply.
	status int
	code   string
	// header is the Nats-Service-Error line of an error reply.
	header string
}

// examples returns every `nats req` block followed by its reply block.
func (p *protocol) examples(t *testing.T) []example {
	t.Helper()
	var out []example
	for _, s := range p.sections {
		for i := 0; i+1 < len(s.blocks); i++ {
			req, rep := s.blocks[i], s.blocks[i+1]
			if req.info != "sh" || !rep.follows || (rep.info != "json" && rep.info != "text") {
				continue
			}
			reqs := natsReqRE.FindAllStringSubmatch(req.body, -1)
			if len(reqs) != 1 {
				continue
			}
			ex := example{
				where:   fmt.Sprintf("%s:%d", protocolFile, req.line),
				subject: strings.Trim(reqs[0][1], "'"),
				body:    reqs[0][2],
			}
			var bodyLines []string
			for _, line := range strings.Split(rep.body, "\n") {
				switch {
				case strings.HasPrefix(line, "Nats-Service-Error-Code: "):
					n, err := strconv.Atoi(strings.TrimPrefix(line, "Nats-Service-Error-Code: "))
					require.NoError(t, err, "%s: the status line", ex.where)
					ex.status = n
				case strings.HasPrefix(line, "Nats-Service-Error: "):
					ex.header = strings.TrimPrefix(line, "Nats-Service-Error: ")
				default:
					bodyLines = append(bodyLines, line)
				}
			}
			ex.reply = strings.Join(bodyLines, "\n")
			if ex.status != 0 {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				require.NoError(t, json.Unmarshal([]byte(ex.reply), &e), "%s: the error body", ex.where)
				ex.code = e.Error.Code
				require.Equal(t, e.Error.Message, ex.header, "%s: the Nats-Service-Error header is the error's message", ex.where)
			}
			out = append(out, ex)
			i++
		}
	}
	return out
}

// TestProtocolExamplesMatchSchemas checks every documented example: a
// request answered with success validates against its operation's request
// schema and the reply against its reply schema; an error reply validates
// against the error schema with a status and code of the errors table. Every
// operation has at least one successful example. Payloads shown in a model's
// or an event's section validate against its schema, and every other JSON
// block is valid JSON.
func TestProtocolExamplesMatchSchemas(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	sch := contractSchemas(t)
	codes := p.errorTable(t)
	succeeded := map[string]int{}
	paired := map[string]bool{}
	for _, ex := range p.examples(t) {
		paired[ex.where] = true
		if !strings.HasPrefix(ex.subject, prefix+".") {
			require.True(t, json.Valid([]byte(ex.reply)), "%s: the reply of %s is not JSON", ex.where, ex.subject)
			continue
		}
		op, ok := p.ops[ex.subject]
		require.True(t, ok, "%s: an example of %s, which is not documented", ex.where, ex.subject)
		if ex.status != 0 {
			require.NoError(t, sch.Validate("error", []byte(ex.reply)), ex.where)
			require.Contains(t, codes, ex.code, "%s: error code %s is not in the errors table", ex.where, ex.code)
			require.Equal(t, codes[ex.code], ex.status, "%s: the status of %s", ex.where, ex.code)
			continue
		}
		body := ex.body
		if strings.TrimSpace(body) == "" {
			body = "{}" // the worker reads an empty body as {}
		}
		require.NoError(t, sch.Validate(op.request, []byte(body)), "%s: the request", ex.where)
		require.NoError(t, sch.Validate(op.reply, []byte(ex.reply)), "%s: the reply", ex.where)
		succeeded[ex.subject]++
	}
	for subject, op := range p.ops {
		if succeeded[subject] == 0 {
			t.Errorf("%s:%d: %s has no example with a successful reply", protocolFile, op.sec.line, subject)
		}
	}

	payloads := 0
	for _, s := range p.sections {
		for _, b := range s.blocks {
			if b.info != "json" {
				continue
			}
			where := fmt.Sprintf("%s:%d", protocolFile, b.line)
			require.True(t, json.Valid([]byte(b.body)), "%s: not valid JSON", where)
			if names := p.schema[s]; len(names) > 0 && !p.followsRequest(s, b) {
				require.NoError(t, sch.Validate(names[0], []byte(b.body)), where)
				payloads++
			}
		}
	}
	require.GreaterOrEqual(t, payloads, len(p.events), "every event has an example payload")
	for ev, s := range p.events {
		found := false
		for _, b := range s.blocks {
			found = found || b.info == "json"
		}
		require.True(t, found, "%s:%d: event %s has no example payload", protocolFile, s.line, ev)
	}
}

// followsRequest reports whether b is the reply of a `nats req` block.
func (p *protocol) followsRequest(s *section, b block) bool {
	for i := 1; i < len(s.blocks); i++ {
		if s.blocks[i].line == b.line {
			prev := s.blocks[i-1]
			return b.follows && prev.info == "sh" && len(natsReqRE.FindAllString(prev.body, -1)) == 1
		}
	}
	return false
}
