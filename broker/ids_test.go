package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// otherSpellings are ways of writing the UUID id that uuid.Parse accepts
// but that are not the canonical lower-case string the workers issue.
func otherSpellings(id string) []string {
	return []string{strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id, strings.ReplaceAll(id, "-", "")}
}

// TestNonCanonicalIDsNameNothing: an id is the canonical string. Another
// spelling of an existing lease's or proxy's UUID names nothing: 404, the
// same as an unknown id, on every operation that takes one, and nothing
// changes.
func TestNonCanonicalIDsNameNothing(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.createPool("ids")
	px := e.addProxies("ids", map[string]any{"host": "h", "port": 1})[0]
	lease, _ := e.mustAcquire(map[string]any{"pool_name": "ids"})

	for _, id := range otherSpellings(lease.ID) {
		for _, c := range []struct {
			op  string
			req map[string]any
		}{
			{"leases.get", map[string]any{"lease_id": id}},
			{"release", map[string]any{"lease_id": id}},
			{"renew", map[string]any{"lease_id": id, "duration_seconds": 60}},
		} {
			det := e.fail(c.op, c.req, 404, "lease_not_found")
			require.Equal(t, fmt.Sprintf("lease %q does not exist", id), det.Message, c.op)
		}
	}
	for _, id := range otherSpellings(px.ID) {
		for _, c := range []struct {
			op  string
			req map[string]any
		}{
			{"admin.proxies.get", map[string]any{"proxy_id": id}},
			{"admin.proxies.update", map[string]any{"proxy_id": id, "city": "x"}},
			{"admin.proxies.delete", map[string]any{"proxy_id": id, "force": true}},
			{"admin.health.apply", map[string]any{"proxy_id": id, "status": "banned", "latency_ms": 1, "protocol": "http"}},
			// The health checker answers the same as the manager.
			{"admin.health.check", map[string]any{"proxy_id": id, "options": map[string]any{"target_url": "http://127.0.0.1:1/"}}},
		} {
			det := e.fail(c.op, c.req, 404, "proxy_not_found")
			require.Equal(t, fmt.Sprintf("proxy %q does not exist", id), det.Message, c.op)
		}
	}

	// The canonical ids still name what they named, unchanged.
	got := e.getLease(lease.ID)
	require.Equal(t, model.LeaseActive, got.Status)
	require.Equal(t, lease.ExpiresAt, got.ExpiresAt)
	p := e.getProxy(px.ID)
	require.Equal(t, model.ProxyActive, p.Status)
	require.Nil(t, p.City)
}
