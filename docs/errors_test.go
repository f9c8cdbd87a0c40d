package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/schemas"
)

// errorTable returns the status of each error code in the table of the
// Errors section (header cells "status" and "code").
func (p *protocol) errorTable(t *testing.T) map[string]int {
	t.Helper()
	for _, s := range p.sections {
		if s.level != 2 || s.title != "Errors" {
			continue
		}
		for _, tbl := range s.tables {
			if len(tbl.header) < 2 || tbl.header[0] != "status" || tbl.header[1] != "code" {
				continue
			}
			codes := map[string]int{}
			for _, row := range tbl.rows {
				where := fmt.Sprintf("%s:%d: errors table, code %s", protocolFile, tbl.line, row[1])
				status, err := strconv.Atoi(row[0])
				require.NoError(t, err, where)
				m := fieldNameRE.FindStringSubmatch(row[1])
				require.NotNil(t, m, "%s: the code must be in backticks", where)
				require.NotContains(t, codes, m[1], "%s: listed twice", where)
				codes[m[1]] = status
			}
			return codes
		}
	}
	t.Fatalf("%s has no \"## Errors\" section with a status | code table", protocolFile)
	return nil
}

// schemaErrorCodes returns the error codes the error schema allows.
func schemaErrorCodes(t *testing.T) []string {
	t.Helper()
	raw, err := fs.ReadFile(schemas.FS(), "error.json")
	require.NoError(t, err)
	var s struct {
		Properties struct {
			Error struct {
				Properties struct {
					Code struct {
						Enum []string `json:"enum"`
					} `json:"code"`
				} `json:"properties"`
			} `json:"error"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(raw, &s))
	codes := s.Properties.Error.Properties.Code.Enum
	require.NotEmpty(t, codes)
	return codes
}

// internalCode is the code of errors the worker does not map: the broker's
// fallback. Nothing a client sends can cause it, so no request below
// provokes it; its status is the contract's.
const internalCode = "internal"

// TestProtocolErrorCodesAreTheWorkers checks the errors table: it lists
// exactly the codes of the error schema, and for every code but internal a
// request to a real worker gets that code with the status the table gives.
func TestProtocolErrorCodesAreTheWorkers(t *testing.T) {
	t.Parallel()
	p := readProtocol(t)
	table := p.errorTable(t)
	require.ElementsMatch(t, schemaErrorCodes(t), keys(boolSet(table)), "the errors table lists exactly the codes of schemas/error.json")
	require.Equal(t, 500, table[internalCode])

	w := startWorker(t)
	req := func(subject string, body any) *nats.Msg {
		t.Helper()
		var data []byte
		switch b := body.(type) {
		case []byte:
			data = b
		default:
			var err error
			data, err = json.Marshal(b)
			require.NoError(t, err)
		}
		msg, err := w.nc.Request(subject, data, 10*time.Second)
		require.NoError(t, err, subject)
		return msg
	}
	ok := func(subject string, body any) map[string]json.RawMessage {
		t.Helper()
		msg := req(subject, body)
		require.Empty(t, msg.Header.Get(micro.ErrorCodeHeader), "%s: %s", subject, msg.Data)
		var out map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(msg.Data, &out))
		return out
	}

	// A pool with one proxy of limit 1, leased by c1.
	ok("pharox.admin.pools.create", map[string]any{"name": "docs"})
	ok("pharox.admin.proxies.add", map[string]any{"pool_name": "docs", "proxies": []any{
		map[string]any{"host": "203.0.113.1", "port": 3128, "max_concurrency": 1}}})
	var lease struct{ ID string }
	require.NoError(t, json.Unmarshal(ok("pharox.acquire", map[string]any{"pool_name": "docs", "consumer_name": "c1"})["lease"], &lease))
	require.NotEmpty(t, lease.ID)

	// A second worker whose requests cannot finish in time: its store
	// "does not answer" within its request timeout.
	stalled, err := workertest.New(t.Context(), w.nc, workertest.Config{Prefix: "stalled", RequestTimeout: time.Nanosecond})
	require.NoError(t, err)
	t.Cleanup(stalled.Stop)
	// A third worker with a per-consumer limit of 1, started after c1's
	// lease, so its view counts it.
	limited, err := workertest.New(t.Context(), w.nc, workertest.Config{Prefix: "limited", MaxLeasesPerConsumer: 1})
	require.NoError(t, err)
	t.Cleanup(limited.Stop)

	// One request per code, in order (the lease is released on the way).
	provoke := []struct {
		code    string
		subject string
		body    any
	}{
		{"bad_request", "pharox.acquire", map[string]any{"pool": "docs"}},
		{"forbidden", "pharox.release", map[string]any{"lease_id": lease.ID, "consumer_name": "c2"}},
		{"pool_not_found", "pharox.stats", map[string]any{"pool_name": "nope"}},
		{"lease_not_found", "pharox.leases.get", map[string]any{"lease_id": uuid.NewString()}},
		{"proxy_not_found", "pharox.admin.proxies.get", map[string]any{"proxy_id": uuid.NewString()}},
		{"conflict", "pharox.admin.pools.create", map[string]any{"name": "docs"}},
		{"payload_too_large", "pharox.acquire", append([]byte(`{"pool_name":"docs"}`), bytes.Repeat([]byte(" "), broker.MaxBody)...)},
		{"unavailable", "stalled.admin.pools.list", []byte(`{}`)},
		{"limit_reached", "limited.acquire", map[string]any{"pool_name": "docs", "consumer_name": "c1"}},
		{"", "pharox.release", map[string]any{"lease_id": lease.ID, "consumer_name": "c1"}},
		{"lease_not_active", "pharox.renew", map[string]any{"lease_id": lease.ID, "duration_seconds": 60}},
	}
	seen := map[string]bool{}
	for _, step := range provoke {
		if step.code == "" {
			ok(step.subject, step.body)
			continue
		}
		msg := req(step.subject, step.body)
		require.NoError(t, contractSchemas(t).Validate("error", msg.Data), "%s: %s", step.subject, msg.Data)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		require.NoError(t, json.Unmarshal(msg.Data, &e))
		require.Equal(t, step.code, e.Error.Code, "%s: %s", step.subject, msg.Data)
		status, err := strconv.Atoi(msg.Header.Get(micro.ErrorCodeHeader))
		require.NoError(t, err, "%s: the %s header", step.subject, micro.ErrorCodeHeader)
		require.Contains(t, table, step.code, "the worker answered %s, which the errors table does not list", step.code)
		require.Equal(t, table[step.code], status, "%s: the status of %s", step.subject, step.code)
		seen[step.code] = true
	}
	for code := range table {
		if code != internalCode && !seen[code] {
			t.Errorf("the errors table lists %s but no request here provokes it: add one", code)
		}
	}
}

func boolSet(m map[string]int) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
