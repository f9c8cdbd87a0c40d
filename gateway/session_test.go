package gateway_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestStickySession: 50 requests of one session through two gateway
// instances leave through one upstream proxy on one lease; it is renewed on
// use once a third of sesstime has passed (not on every request), and,
// left idle, it ends by expiry after sesstime plus the expiry grace with no
// gateway releasing it; the next request starts a new lease. Worker and
// gateway time is one hand-moved clock.
func TestStickySession(t *testing.T) {
	t.Parallel()
	const grace = time.Second
	e := newEnv(t, envConfig{clock: true, grace: grace})
	tg := startTargets(t)
	gws := []*gw{e.gateway(), e.gateway()}
	pxs, ups := httpProxies(t, 3, "", "")
	e.pool("sticky", 5, ups...)
	// The session name holds a comma, percent-encoded in the username.
	user := "pool=sticky,session=checkout%2C1,sesstime=60,selector=random"
	clients := []*http.Client{gws[0].httpClient(user, token, true, tg), gws[1].httpClient(user, token, false, tg)}
	leaseOf := func(i int) string {
		t.Helper()
		code, body, hdr := get(t, clients[i%2], fmt.Sprintf("%s/ok?n=%d", tg.http.URL, i))
		require.Equal(t, http.StatusOK, code, body)
		return hdr.Get("X-Pharox-Lease-Id")
	}

	first := leaseOf(0)
	for i := 1; i < 50; i++ {
		require.Equal(t, first, leaseOf(i), "request %d", i)
	}
	used := 0
	for _, px := range pxs {
		if n := px.Requests.Load(); n > 0 {
			used++
			require.EqualValues(t, 50, n)
		}
	}
	require.Equal(t, 1, used, "every request left through the same upstream")
	require.Equal(t, 1, e.stats("sticky").TotalLeases)
	require.Equal(t, 1, len(e.waitEvents(1, named("acquired", "sticky"))))

	// A third of sesstime later: each gateway renews once on its next use.
	e.clock.Advance(21 * time.Second)
	for i := range 4 {
		require.Equal(t, first, leaseOf(i))
	}
	e.waitEvents(2, ofLease("renewed", first))
	e.settleEvents() // a third renew may have come from either worker
	require.Equal(t, 2, e.count(ofLease("renewed", first)), "renewed once per gateway, not per request")
	require.Equal(t, 1, e.count(named("acquired", "sticky")))

	// Idle past sesstime and the grace: expired, never released.
	e.clock.Advance(60*time.Second + grace + time.Millisecond)
	n, err := e.c.Cleanup(e.ctx())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	e.waitEvents(1, ofLease("expired", first))
	l, err := e.c.Lease(e.ctx(), first)
	require.NoError(t, err)
	require.Equal(t, model.LeaseExpired, l.Status)
	e.settleEvents() // a release by the other worker would not come before the expiry
	require.Zero(t, e.count(ofLease("released", first)))
	require.Zero(t, e.stats("sticky").TotalLeases)

	// The session goes on with a new lease, the same on both gateways.
	second := leaseOf(1)
	require.NotEqual(t, first, second)
	require.Equal(t, second, leaseOf(0))
	require.Equal(t, 1, e.stats("sticky").TotalLeases)
}
