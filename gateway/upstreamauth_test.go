package gateway_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

// TestUpstreamRefusesItsCredentials: an http upstream that answers 407 to
// the credentials stored for it has failed (its lease is released with
// outcome failure, the reason naming the 407), and the 407 is not passed
// to the client: a forwarded request goes on through the next proxy, with
// a session as without one.
func TestUpstreamRefusesItsCredentials(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t, gateway.WithRetries(2))
	locked := proxytest.HTTP(t, proxytest.HTTPConfig{User: "scraper", Password: "right"})
	good := proxytest.HTTP(t, proxytest.HTTPConfig{})
	// Added first, so first_available leases it first.
	pxs := e.pool("creds", 0, up(model.ProtocolHTTP, locked, "scraper", "wrong"), up(model.ProtocolHTTP, good, "", ""))
	refused, open := pxs[0].ID, pxs[1].ID

	for i, user := range []string{"pool=creds", "pool=creds,session=s1"} {
		code, body, hdr := get(t, w.httpClient(user, token, false, tg), tg.http.URL+"/ok")
		require.Equal(t, http.StatusOK, code, "%s: %s", user, body)
		require.Equal(t, open, hdr.Get(gateway.HeaderProxyID), "%s went on through the proxy that takes its credentials", user)

		var failed []map[string]any
		for _, ev := range e.waitEvents(i+1, func(ev client.Event) bool {
			return ev.Name == "released" && ev.Lease() != nil && ev.Lease().ProxyID == refused
		}) {
			var payload map[string]any
			require.NoError(t, json.Unmarshal(ev.Data, &payload))
			failed = append(failed, payload)
		}
		require.Len(t, failed, i+1)
		require.Equal(t, "failure", failed[i]["outcome"], user)
		require.Contains(t, failed[i]["reason"], "407", user)
	}
	require.Zero(t, locked.Requests.Load(), "the locked proxy served nothing")
	require.GreaterOrEqual(t, locked.Total(), int64(2), "it was asked once per request")
}
