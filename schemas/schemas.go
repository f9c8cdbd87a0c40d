// Package schemas holds the JSON Schemas (draft 2020-12) of the pharox wire
// contract: every request, reply, model and event, one file each, embedded in
// the binary and compiled once by Load.
//
// A schema is named by its file name without ".json":
//
//   - models: proxy, lease, pool_stats, consumer, proxy_pool, health_check,
//     health_check_options, health_check_result, proxy_filters, credentials,
//     cooldown, error;
//   - requests: <operation>.request (acquire, release, renew, leases_get,
//     cleanup, stats, pools_create, pools_list, pools_update, pools_delete,
//     proxies_add, proxies_list, proxies_get, proxies_update, proxies_delete,
//     consumers_ensure, consumers_list, health_check, health_apply,
//     health_last), and the request-side forms of nested objects:
//     proxy.input, proxy_filters.input, health_check.input,
//     health_check_options.input, credentials.input;
//   - replies: acquire.reply, lease.reply, cleanup.reply, pools_list.reply,
//     proxies_add.reply, proxies_list.reply, deleted.reply,
//     consumers_list.reply, health_check.reply, health_last.reply; the other
//     operations reply with a model (see Operation);
//   - events: event.acquired, event.acquire_failed, event.released,
//     event.expired, event.renewed, event.health, event.cooldown (and
//     event.acquire, which accepts either acquire event);
//   - scalars shared by $ref: uuid, uuid_any, timestamp, timestamp_rfc3339,
//     name, protocol, proxy_status, lease_status, selector, outcome,
//     latitude, longitude, port.
//
// The v1.1 additions of the contract (feedback on release, cooldowns,
// lowest_latency, the protocol filter, exclude_proxy_ids, health.last) are
// in these files; their descriptions say "v1.1".
//
// Every $id is https://pharox.dev/schemas/<name>.json and files refer to one
// another by $id; nothing is fetched from the network.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// BaseURL prefixes every schema's $id: BaseURL + name + ".json".
const BaseURL = "https://pharox.dev/schemas/"

const draft2020 = "https://json-schema.org/draft/2020-12/schema"

//go:embed *.json
var files embed.FS

// FS exposes the embedded schema files (<name>.json at the root), e.g. to
// serve or publish them.
func FS() fs.FS { return files }

// Set is the compiled set of schemas. It is immutable and safe for
// concurrent use.
type Set struct {
	schemas map[string]*jsonschema.Schema
	names   []string
}

// Load parses and compiles every embedded schema. It fails if a file is not
// valid JSON, lacks the draft 2020-12 $schema, has an $id other than
// BaseURL+<file name>, refers to a schema that is not embedded, or does not
// compile.
func Load() (*Set, error) {
	paths, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, fmt.Errorf("schemas: list embedded files: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	names := make([]string, 0, len(paths))
	for _, p := range paths {
		name := strings.TrimSuffix(p, ".json")
		raw, err := fs.ReadFile(files, p)
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: invalid JSON: %w", name, err)
		}
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("schemas: %s: not a JSON object", name)
		}
		if s, _ := obj["$schema"].(string); s != draft2020 {
			return nil, fmt.Errorf("schemas: %s: $schema is %q, want %q", name, s, draft2020)
		}
		id := BaseURL + p
		if got, _ := obj["$id"].(string); got != id {
			return nil, fmt.Errorf("schemas: %s: $id is %q, want %q", name, got, id)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	set := &Set{schemas: make(map[string]*jsonschema.Schema, len(names)), names: names}
	for _, name := range names {
		sch, err := c.Compile(BaseURL + name + ".json")
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: compile: %w", name, err)
		}
		set.schemas[name] = sch
	}
	return set, nil
}

// Names returns the names of every schema, sorted.
func (s *Set) Names() []string {
	return append([]string(nil), s.names...)
}

// Has reports whether a schema of that name exists.
func (s *Set) Has(name string) bool {
	_, ok := s.schemas[name]
	return ok
}

// Validate checks one JSON document against the named schema (the file name
// without ".json", e.g. "acquire.request", "lease", "event.acquired"). The
// error names the schema and, for a document that does not conform, wraps a
// *jsonschema.ValidationError that says where and why.
func (s *Set) Validate(name string, doc []byte) error {
	sch, ok := s.schemas[name]
	if !ok {
		return fmt.Errorf("schemas: unknown schema %q", name)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("schemas: %s: invalid JSON: %w", name, err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("schemas: %s: %w", name, err)
	}
	return nil
}

// ValidateValue marshals v with encoding/json and validates the result
// against the named schema, e.g. to check that a model value is what the
// contract promises on the wire.
func (s *Set) ValidateValue(name string, v any) error {
	doc, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("schemas: %s: marshal: %w", name, err)
	}
	return s.Validate(name, doc)
}

// Operation returns the request and reply schema names of an operation,
// given as the subject without its prefix ("acquire", "admin.proxies.add",
// ...). ok is false for an unknown operation.
func Operation(op string) (request, reply string, ok bool) {
	switch op {
	case "acquire":
		return "acquire.request", "acquire.reply", true
	case "release":
		return "release.request", "lease.reply", true
	case "renew":
		return "renew.request", "lease.reply", true
	case "leases.get":
		return "leases_get.request", "lease.reply", true
	case "cleanup":
		return "cleanup.request", "cleanup.reply", true
	case "stats":
		return "stats.request", "pool_stats", true
	case "admin.pools.create":
		return "pools_create.request", "proxy_pool", true
	case "admin.pools.list":
		return "pools_list.request", "pools_list.reply", true
	case "admin.pools.update":
		return "pools_update.request", "proxy_pool", true
	case "admin.pools.delete":
		return "pools_delete.request", "deleted.reply", true
	case "admin.proxies.add":
		return "proxies_add.request", "proxies_add.reply", true
	case "admin.proxies.list":
		return "proxies_list.request", "proxies_list.reply", true
	case "admin.proxies.get":
		return "proxies_get.request", "proxy", true
	case "admin.proxies.update":
		return "proxies_update.request", "proxy", true
	case "admin.proxies.delete":
		return "proxies_delete.request", "deleted.reply", true
	case "admin.consumers.ensure":
		return "consumers_ensure.request", "consumer", true
	case "admin.consumers.list":
		return "consumers_list.request", "consumers_list.reply", true
	case "admin.health.check":
		return "health_check.request", "health_check.reply", true
	case "admin.health.apply":
		return "health_apply.request", "proxy", true
	case "admin.health.last":
		return "health_last.request", "health_last.reply", true
	}
	return "", "", false
}

// Operations lists every operation Operation knows, in contract order.
func Operations() []string {
	return []string{
		"acquire", "release", "renew", "leases.get", "cleanup", "stats",
		"admin.pools.create", "admin.pools.list", "admin.pools.update", "admin.pools.delete",
		"admin.proxies.add", "admin.proxies.list", "admin.proxies.get", "admin.proxies.update",
		"admin.proxies.delete", "admin.consumers.ensure", "admin.consumers.list",
		"admin.health.check", "admin.health.apply", "admin.health.last",
	}
}

// Event returns the schema name of an event's payload, given the last token
// of its subject ("acquired", "acquire_failed", "released", "expired",
// "renewed", "health", "cooldown"). ok is false for an unknown event.
func Event(event string) (name string, ok bool) {
	switch event {
	case "acquired", "acquire_failed", "released", "expired", "renewed", "health", "cooldown":
		return "event." + event, true
	}
	return "", false
}

// refuseLoader keeps the compiler offline: every schema is added up front,
// so a $ref to anything else is a mistake, reported at Load.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, errors.New("not an embedded schema: " + url)
}
