package docs_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/schemas"
)

// protocolFile is the document these tests hold against the worker.
const protocolFile = "PROTOCOL.md"

// prefix is the subject prefix PROTOCOL.md is written with.
const prefix = "pharox"

var (
	schemaOnce sync.Once
	schemaSet  *schemas.Set
	schemaErr  error
)

func contractSchemas(t *testing.T) *schemas.Set {
	t.Helper()
	schemaOnce.Do(func() { schemaSet, schemaErr = schemas.Load() })
	require.NoError(t, schemaErr)
	return schemaSet
}

var (
	// subjectHeadingRE is an operation or event heading: ### `pharox.x.y`.
	subjectHeadingRE = regexp.MustCompile("^`(" + prefix + `\.[a-z0-9_.]+)` + "`$")
	// schemaLinkRE is a link to a schema file: [`name`](../schemas/name.json).
	schemaLinkRE = regexp.MustCompile("\\[`([^`]+)`\\]\\(\\.\\./schemas/([^)]+)\\.json\\)")
	// requestLineRE is an operation's schema line.
	requestLineRE = regexp.MustCompile("^Request: (\\[`[^`]+`\\]\\([^)]+\\)) · Reply: (\\[`[^`]+`\\]\\([^)]+\\))$")
	// fieldNameRE is a field table's first cell.
	fieldNameRE = regexp.MustCompile("^`([a-z_]+)`$")
	// natsReqRE is one `nats req <subject> '<body>'` of an example.
	natsReqRE = regexp.MustCompile(`(?s)nats req\s+('[^']*'|\S+)\s+'([^']*)'`)
	// versionRE is the line naming the service version described.
	versionRE = regexp.MustCompile("^Service version: `([^`]+)`$")
)

// docOp is an operation as PROTOCOL.md documents it.
type docOp struct {
	subject        string
	sec            *section
	request, reply string // schema names from its Request/Reply line
}

// protocol is PROTOCOL.md read for these tests.
type protocol struct {
	*mdDoc
	ops    map[string]*docOp     // by subject
	events map[string]*section   // by event name (the subject's last token)
	schema map[*section][]string // schema names of sections with a Schema line
}

func readProtocol(t *testing.T) *protocol {
	t.Helper()
	p := &protocol{mdDoc: readDoc(t, protocolFile), ops: map[string]*docOp{}, events: map[string]*section{}, schema: map[*section][]string{}}
	for _, s := range p.sections {
		if m := subjectHeadingRE.FindStringSubmatch(s.title); m != nil {
			subject := m[1]
			if ev, ok := strings.CutPrefix(subject, prefix+".events."); ok {
				require.NotContains(t, p.events, ev, "%s:%d: event %s documented twice", protocolFile, s.line, subject)
				p.events[ev] = s
			} else {
				require.NotContains(t, p.ops, subject, "%s:%d: %s documented twice", protocolFile, s.line, subject)
				p.ops[subject] = &docOp{subject: subject, sec: s}
			}
		}
		for _, para := range s.paras {
			where := fmt.Sprintf("%s:%d", protocolFile, para.line)
			switch {
			case strings.HasPrefix(para.text, "Request: "):
				op := p.opOf(s)
				require.NotNil(t, op, "%s: a Request line outside an operation's section", where)
				require.Regexp(t, requestLineRE, para.text, "%s: want \"Request: [`name`](../schemas/name.json) · Reply: [`name`](../schemas/name.json)\"", where)
				names := schemaLinks(t, where, para.text)
				require.Len(t, names, 2, where)
				require.Empty(t, op.request, "%s: a second Request line for %s", where, op.subject)
				op.request, op.reply = names[0], names[1]
			case strings.HasPrefix(para.text, "Schema: "), strings.HasPrefix(para.text, "Schemas: "):
				names := schemaLinks(t, where, para.text)
				require.NotEmpty(t, names, "%s: a Schema line without a schema link", where)
				require.NotContains(t, p.schema, s, "%s: a second Schema line in %q", where, s.title)
				p.schema[s] = names
			}
		}
	}
	return p
}

func (p *protocol) opOf(s *section) *docOp {
	for _, op := range p.ops {
		if op.sec == s {
			return op
		}
	}
	return nil
}

// schemaLinks returns the schema names linked from text, checking that each
// link's text is the name of the file it links to.
func schemaLinks(t *testing.T, where, text string) []string {
	t.Helper()
	var names []string
	for _, m := range schemaLinkRE.FindAllStringSubmatch(text, -1) {
		require.Equal(t, m[2], m[1], "%s: link text %q does not name its file %s.json", where, m[1], m[2])
		require.True(t, contractSchemas(t).Has(m[1]), "%s: no schema %q in schemas/", where, m[1])
		names = append(names, m[1])
	}
	return names
}

// TestProtocolDocumentsWhatTheWorkerServes checks PROTOCOL.md against a
// real worker: every subject served is documented and every documented
// subject is served, each operation's request schema is the one its
// endpoint announces and its reply schema the one package schemas gives,
// and the version described is the worker's.
func TestProtocolDocumentsWhatTheWorkerServes(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	w := startWorker(t)

	served := w.Broker.Subjects()
	require.NotEmpty(t, served)
	documented := make([]string, 0, len(p.ops))
	for subject := range p.ops {
		documented = append(documented, subject)
	}
	sort.Strings(served)
	sort.Strings(documented)
	for _, s := range served {
		if _, ok := p.ops[s]; !ok {
			t.Errorf("%s is served but %s has no section \"### `%s`\"", s, protocolFile, s)
		}
	}
	for _, s := range documented {
		if !slices.Contains(served, s) {
			t.Errorf("%s:%d documents %s, which the worker does not serve", protocolFile, p.ops[s].sec.line, s)
		}
	}

	endpoints := map[string]string{}
	for _, ep := range w.Broker.Info().Endpoints {
		endpoints[ep.Subject] = ep.Metadata["request_schema"]
	}
	for _, subject := range documented {
		op := p.ops[subject]
		if op.request == "" {
			t.Errorf("%s:%d: %s has no \"Request: ... · Reply: ...\" line", protocolFile, op.sec.line, subject)
			continue
		}
		if want, ok := endpoints[subject]; ok {
			require.Equal(t, want, op.request, "%s: the endpoint's request_schema", subject)
		}
		_, reply, ok := schemas.Operation(strings.TrimPrefix(subject, prefix+"."))
		require.True(t, ok, "%s is not an operation package schemas knows", subject)
		require.Equal(t, reply, op.reply, "%s: the reply schema", subject)
	}

	var version string
	for _, s := range p.sections {
		for _, para := range s.paras {
			if m := versionRE.FindStringSubmatch(para.text); m != nil {
				version = m[1]
			}
		}
	}
	require.Equal(t, broker.Version, version, "the \"Service version:\" line of %s", protocolFile)
	require.Equal(t, broker.Version, w.Broker.Info().Version)
}

// TestProtocolDocumentsEveryEvent checks the event sections against the
// event schemas: one section per event, each linking its schema.
func TestProtocolDocumentsEveryEvent(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	want := map[string]bool{}
	files, err := fs.Glob(schemas.FS(), "event.*.json")
	require.NoError(t, err)
	for _, f := range files {
		ev := strings.TrimSuffix(strings.TrimPrefix(f, "event."), ".json")
		if _, ok := schemas.Event(ev); ok {
			want[ev] = true
		}
	}
	require.NotEmpty(t, want)
	for ev := range want {
		if _, ok := p.events[ev]; !ok {
			t.Errorf("event %s has a schema but %s has no section \"### `%s.events.%s`\"", ev, protocolFile, prefix, ev)
		}
	}
	for ev, s := range p.events {
		name, ok := schemas.Event(ev)
		if !ok || !want[ev] {
			t.Errorf("%s:%d documents event %s, which has no schema", protocolFile, s.line, ev)
			continue
		}
		require.NotEmpty(t, p.schema[s], "%s:%d: event %s has no Schema line", protocolFile, s.line, ev)
		require.Equal(t, name, p.schema[s][0], "%s:%d: the schema of event %s", protocolFile, s.line, ev)
	}
}

// subjectMentionRE finds subjects written in the text: pharox.<tokens>, not
// part of a longer name or URL.
var subjectMentionRE = regexp.MustCompile(`(?:^|[^./\w$-])(` + prefix + `(?:\.[\w*>-]+)+)`)

// TestProtocolMentionsOnlyRealSubjects checks every pharox.<...> written
// anywhere in PROTOCOL.md, code included: it must be served, be a
// documented event, or be a wildcard matching one of those. Templates such
// as pharox.events.<name> are skipped.
func TestProtocolMentionsOnlyRealSubjects(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	var real []string
	for subject := range p.ops {
		real = append(real, subject)
	}
	for ev := range p.events {
		real = append(real, prefix+".events."+ev)
	}
	mentions := 0
	for i, line := range p.lines {
		for _, m := range subjectMentionRE.FindAllStringSubmatchIndex(line, -1) {
			subject := line[m[2]:m[3]]
			if rest := line[m[3]:]; strings.HasPrefix(rest, ".<") || strings.HasPrefix(rest, "<") {
				continue
			}
			mentions++
			if !slices.ContainsFunc(real, func(s string) bool { return subjectMatches(subject, s) }) {
				t.Errorf("%s:%d mentions %s, which is neither served nor an event", protocolFile, i+1, subject)
			}
		}
	}
	require.Positive(t, mentions)
}

// subjectMatches reports whether the subject or NATS wildcard pattern
// matches subject.
func subjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range pt {
		switch {
		case tok == ">":
			return i == len(pt)-1 && len(st) > i
		case i >= len(st):
			return false
		case tok != "*" && tok != st[i]:
			return false
		}
	}
	return len(pt) == len(st)
}

func TestSubjectMatches(t *testing.T) {
	require.True(t, subjectMatches("pharox.acquire", "pharox.acquire"))
	require.True(t, subjectMatches("pharox.events.*", "pharox.events.acquired"))
	require.True(t, subjectMatches("pharox.events.>", "pharox.events.acquired"))
	require.True(t, subjectMatches("pharox.>", "pharox.admin.pools.list"))
	require.False(t, subjectMatches("pharox.events.*", "pharox.events"))
	require.False(t, subjectMatches("pharox.admin.*", "pharox.admin.pools.list"))
	require.False(t, subjectMatches("pharox.acquire", "pharox.acquire.x"))
	require.False(t, subjectMatches("pharox.events", "pharox.events.acquired"))
}

// rawSchema is what the field checks read of a schema file.
type rawSchema struct {
	Ref        string                     `json:"$ref"`
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
}

// schemaFields returns a schema's properties and required fields, those of
// the schema it extends with a top-level $ref included.
func schemaFields(t *testing.T, name string) (props, required map[string]bool) {
	t.Helper()
	raw, err := fs.ReadFile(schemas.FS(), name+".json")
	require.NoError(t, err)
	var s rawSchema
	require.NoError(t, json.Unmarshal(raw, &s))
	props, required = map[string]bool{}, map[string]bool{}
	if s.Ref != "" {
		base, ok := strings.CutPrefix(s.Ref, schemas.BaseURL)
		require.True(t, ok, "%s: $ref %s", name, s.Ref)
		props, required = schemaFields(t, strings.TrimSuffix(base, ".json"))
	}
	for k := range s.Properties {
		props[k] = true
	}
	for _, k := range s.Required {
		required[k] = true
	}
	return props, required
}

// tableFields returns the field names of a field table and those whose
// default cell says "required" (nil when it has no default column).
func tableFields(t *testing.T, where string, tbl table) (fields, required map[string]bool) {
	t.Helper()
	fields = map[string]bool{}
	def := slices.Index(tbl.header, "default")
	if def >= 0 {
		required = map[string]bool{}
	}
	for i, row := range tbl.rows {
		m := fieldNameRE.FindStringSubmatch(row[0])
		require.NotNil(t, m, "%s: row %d: the first cell must be a field name in backticks, got %q", where, i+1, row[0])
		require.False(t, fields[m[1]], "%s: field %s listed twice", where, m[1])
		require.Len(t, row, len(tbl.header), "%s: row %s has %d cells for %d columns", where, m[1], len(row), len(tbl.header))
		fields[m[1]] = true
		if def >= 0 && row[def] == "required" {
			required[m[1]] = true
		}
	}
	return fields, required
}

// keys is m's keys in order.
func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// TestProtocolFieldTablesMatchSchemas checks every field table against its
// schema: the fields listed are exactly the schema's properties, and the
// fields whose default is "required" exactly its required ones. Operations
// whose request has fields, models and events must have a field table.
func TestProtocolFieldTablesMatchSchemas(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	checked := 0
	check := func(where string, tbl table, schema string, withRequired bool) {
		fields, required := tableFields(t, where, tbl)
		props, schemaRequired := schemaFields(t, schema)
		require.Equal(t, keys(props), keys(fields), "%s: the fields of schema %s", where, schema)
		if withRequired && required != nil {
			require.Equal(t, keys(schemaRequired), keys(required), "%s: the fields whose default is \"required\" (schema %s)", where, schema)
		}
		checked++
	}
	for _, s := range p.sections {
		op := p.opOf(s)
		names := p.schema[s]
		fieldTables := 0
		for _, tbl := range s.tables {
			where := fmt.Sprintf("%s:%d", protocolFile, tbl.line)
			switch tbl.header[0] {
			case "field":
				fieldTables++
				switch {
				case op != nil:
					check(where, tbl, op.request, true)
				case len(names) > 0:
					for i, name := range names {
						check(where, tbl, name, i == 0)
					}
				default:
					t.Errorf("%s: a field table in %q, which has no Request or Schema line", where, s.title)
				}
			case "reply field":
				require.NotNil(t, op, "%s: a reply field table outside an operation", where)
				check(where, tbl, op.reply, false)
			}
		}
		switch {
		case op != nil && op.request != "":
			if props, _ := schemaFields(t, op.request); len(props) > 0 && fieldTables == 0 {
				t.Errorf("%s:%d: %s takes fields but has no field table", protocolFile, s.line, op.subject)
			}
		case len(names) > 0 && (s.chapter == "Models" || p.isEvent(s)) && fieldTables == 0:
			t.Errorf("%s:%d: %q has no field table", protocolFile, s.line, s.title)
		}
	}
	require.Greater(t, checked, len(p.ops))
}

func (p *protocol) isEvent(s *section) bool {
	for _, e := range p.events {
		if e == s {
			return true
		}
	}
	return false
}
