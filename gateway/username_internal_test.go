package gateway

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

func TestParseUsername(t *testing.T) {
	t.Parallel()
	r, err := parseUsername("pool=latam-1_x,consumer=c_1,country=AR,city=S%C3%A3o%20Paulo%2C%20SP,source=s%3Dx,isp=a%25b," +
		"asn=7303,protocol=socks5|http,selector=round_robin,session=checkout%2C1%3A2,sesstime=600,wait=2.5")
	require.NoError(t, err)
	require.Equal(t, "latam-1_x", r.pool)
	require.Equal(t, "c_1", r.consumer)
	require.Equal(t, "AR", *r.filters.Country)
	require.Equal(t, "São Paulo, SP", *r.filters.City)
	require.Equal(t, "s=x", *r.filters.Source)
	require.Equal(t, "a%b", *r.filters.ISP)
	require.EqualValues(t, 7303, *r.filters.ASN)
	require.Equal(t, []model.Protocol{model.ProtocolSOCKS5, model.ProtocolHTTP}, r.protocols)
	require.Equal(t, model.SelectorRoundRobin, *r.selector)
	require.Equal(t, "checkout,1:2", r.session)
	require.Equal(t, 600, r.sesstime)
	require.Equal(t, 2.5, r.wait)

	r, err = parseUsername("")
	require.NoError(t, err)
	require.Equal(t, request{}, r)

	for in, msg := range map[string]string{
		"latam":                                `"latam" is not key=value`,
		"pool=":                                "pool has an empty value",
		"pool=a,,country=AR":                   `"" is not key=value`,
		"pool=a b":                             "pool must match",
		"pool=a,pool=b":                        "pool is given twice",
		"colour=red":                           `unknown key "colour"`,
		"session=a=b":                          "raw \"=\"",
		"session=%zz":                          "not valid percent-encoding",
		"asn=AS7303":                           "asn must be an integer",
		"protocol=ftp":                         `got "ftp"`,
		"protocol=http|":                       `got ""`,
		"selector=best":                        "selector must be",
		"sesstime=0":                           "sesstime must be",
		"sesstime=86401":                       "sesstime must be",
		"sesstime=1.5":                         "sesstime must be",
		"wait=-1":                              "wait must be",
		"wait=60.5":                            "wait must be",
		"wait=NaN":                             "wait must be",
		"session=" + strings.Repeat("s", 257):  "session must be at most 256",
		"consumer=" + strings.Repeat("c", 129): "consumer must match",
	} {
		_, err := parseUsername(in)
		require.ErrorContains(t, err, msg, in)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	ts, err := ParseTokens(strings.NewReader("open\nlimited pools=a|b consumer=bob"))
	require.NoError(t, err)
	g, err := New(stubLeaser{}, WithTokens(ts), WithPool("a"), WithConsumer("gw"))
	require.NoError(t, err)
	open, _ := ts.match("open")
	limited, _ := ts.match("limited")

	sp, gerr := g.resolve("", open)
	require.Nil(t, gerr)
	require.Equal(t, "a", sp.pool)
	require.Equal(t, "gw", sp.consumer)
	require.Nil(t, sp.filters)

	sp, gerr = g.resolve("pool=b,session=s", limited)
	require.Nil(t, gerr)
	require.Equal(t, "bob", sp.consumer, "the token's consumer")
	require.Equal(t, DefaultSessionSeconds, sp.sesstime)

	_, gerr = g.resolve("pool=c", limited)
	require.Equal(t, 403, gerr.Status)
	_, gerr = g.resolve("consumer=alice", limited)
	require.Equal(t, 403, gerr.Status)
	_, gerr = g.resolve("sesstime=5", open)
	require.Equal(t, 400, gerr.Status)

	g2, err := New(stubLeaser{})
	require.NoError(t, err)
	_, gerr = g2.resolve("country=AR", nil)
	require.Equal(t, 400, gerr.Status)
	require.Contains(t, gerr.Message, "no pool")
}

func TestTokens(t *testing.T) {
	t.Parallel()
	ts, err := ParseTokens(strings.NewReader("# clients\n\nalpha\n  beta pools=a|b consumer=c1 \ngamma;delta consumer=d\n"))
	require.NoError(t, err)
	require.Equal(t, 4, ts.Len())
	for _, tok := range []string{"alpha", "beta", "gamma", "delta"} {
		_, ok := ts.match(tok)
		require.True(t, ok, tok)
	}
	for _, tok := range []string{"", "alph", "alphaa", "beta pools=a|b", "ALPHA"} {
		_, ok := ts.match(tok)
		require.False(t, ok, tok)
	}
	b, _ := ts.match("beta")
	require.Equal(t, []string{"a", "b"}, b.Pools)
	require.Equal(t, "c1", b.Consumer)
	require.NoError(t, b.allows("a", "c1"))
	require.Error(t, b.allows("c", "c1"))
	require.Error(t, b.allows("a", "other"))

	for in, msg := range map[string]string{
		"x pools=a|b c":      "only pools=a|b and consumer=name",
		"x pools=a||b":       `"" is not a pool name`,
		"x consumer=a b":     "only pools",
		"x consumer=":        `"" is not a consumer name`,
		"ok\nx colour=green": "line 2",
	} {
		_, err := ParseTokens(strings.NewReader(in))
		require.ErrorContains(t, err, msg, in)
	}
	var none *Tokens
	require.Zero(t, none.Len())
}

func TestSessionRequestID(t *testing.T) {
	t.Parallel()
	id := sessionRequestID("pool", "consumer", strings.Repeat("s", 256))
	require.LessOrEqual(t, len(id), model.MaxRequestIDLen)
	require.True(t, strings.HasPrefix(id, "gw-"))
	require.Equal(t, id, sessionRequestID("pool", "consumer", strings.Repeat("s", 256)))
	require.NotEqual(t, sessionRequestID("a", "bc", "d"), sessionRequestID("ab", "c", "d"), "fields cannot run into each other")
	require.NotEqual(t, sessionRequestID("a", "b", "s1"), sessionRequestID("a", "b", "s2"))
}
