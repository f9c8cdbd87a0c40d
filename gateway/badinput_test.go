package gateway_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/model"
)

// rawProxyRequest sends a request line and headers to the gateway and
// reads its answer.
func rawProxyRequest(t *testing.T, addr, head string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, head)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(body)
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestBadInput: every refusal has its status (and SOCKS5 answer), and
// nothing is leased for any of them.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	tg := startTargets(t)
	// The refusals are asked of a gateway with the default header timeout:
	// with a short one, a client slowed down by a loaded machine is cut off
	// mid-handshake, and the bytes it sends after the deadline make the
	// gateway's close a reset (seen as "connection reset by peer" reading a
	// SOCKS5 reply). Only the header timeout check below needs a short one.
	w := e.gateway()
	cutoff := e.gateway(gateway.WithHeaderTimeout(300 * time.Millisecond))
	px := e.httpPool("badinput", 0)
	e.pool("allowed", 0, up(model.ProtocolHTTP, px, "", ""))
	require.Zero(t, e.stats("badinput").TotalLeases)

	type answer struct {
		status int
		code   string
	}
	target := tg.http.URL + "/ok"
	cases := []struct {
		name   string
		method string
		auth   string
		want   answer
	}{
		{"no credentials", "GET", "", answer{407, "proxy_auth_required"}},
		{"wrong token", "GET", basic("pool=badinput", "nope"), answer{407, "proxy_auth_required"}},
		{"not basic", "GET", "Bearer " + token, answer{407, "proxy_auth_required"}},
		{"malformed username", "GET", basic("badinput", token), answer{400, "bad_username"}},
		{"unknown key", "GET", basic("pool=badinput,colour=red", token), answer{400, "bad_username"}},
		{"duplicate key", "GET", basic("pool=badinput,pool=allowed", token), answer{400, "bad_username"}},
		{"raw = in a value", "GET", basic("pool=badinput,session=a=b", token), answer{400, "bad_username"}},
		{"bad percent-encoding", "GET", basic("pool=badinput,session=%zz", token), answer{400, "bad_username"}},
		{"sesstime out of range", "GET", basic("pool=badinput,session=s,sesstime=0", token), answer{400, "bad_username"}},
		{"wait out of range", "GET", basic("pool=badinput,wait=61", token), answer{400, "bad_username"}},
		{"no pool", "GET", basic("country=AR", token), answer{400, "bad_username"}},
		{"unknown pool", "GET", basic("pool=nosuch", token), answer{400, "pool_not_found"}},
		{"unknown pool, CONNECT", "CONNECT", basic("pool=nosuch", token), answer{400, "pool_not_found"}},
		{"protocol filter before v1.1", "GET", basic("pool=badinput,protocol=socks5", token), answer{400, "needs_contract_v1_1"}},
		{"pool the token may not use", "GET", basic("pool=badinput", "limited"), answer{403, "forbidden"}},
		{"consumer the token may not use", "CONNECT", basic("pool=allowed,consumer=alice", "limited"), answer{403, "forbidden"}},
	}
	for _, c := range cases {
		if c.name == "protocol filter before v1.1" && gateway.ContractV11 {
			continue
		}
		head := c.method + " " + target + " HTTP/1.1\r\nHost: " + tg.http.Listener.Addr().String() + "\r\n"
		if c.method == "CONNECT" {
			head = "CONNECT " + tg.https.Listener.Addr().String() + " HTTP/1.1\r\nHost: " + tg.https.Listener.Addr().String() + "\r\n"
		}
		if c.auth != "" {
			head += "Proxy-Authorization: " + c.auth + "\r\n"
		}
		resp, body := rawProxyRequest(t, w.httpAddr, head+"\r\n")
		require.Equal(t, c.want.status, resp.StatusCode, "%s: %s", c.name, body)
		var eb model.ErrorBody
		require.NoError(t, json.Unmarshal([]byte(body), &eb), c.name)
		require.Equal(t, c.want.code, eb.Error.Code, c.name)
		require.NotEmpty(t, eb.Error.Message, c.name)
		require.NotContains(t, body, token, "%s: a token is never echoed", c.name)
		if c.want.status == 407 {
			require.Equal(t, `Basic realm="pharox gateway"`, resp.Header.Get("Proxy-Authenticate"), c.name)
		}
	}

	// Not a proxy request at all.
	resp, _ := rawProxyRequest(t, w.httpAddr, "GET /ok HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic("pool=badinput", token)+"\r\n\r\n")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// Oversize headers: 431 before anything is read into a lease request.
	resp, _ = rawProxyRequest(t, w.httpAddr, "GET "+target+" HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+
		basic("pool=badinput", token)+"\r\nX-Big: "+strings.Repeat("a", 80<<10)+"\r\n\r\n")
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)

	// A client that sends nothing is cut off at the header timeout.
	for _, addr := range []string{cutoff.httpAddr, cutoff.socksAddr} {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		n, err := conn.Read(make([]byte, 1))
		require.Zero(t, n)
		require.ErrorIs(t, err, io.EOF, "%s: closed by the gateway, not by our 5 s deadline", addr)
		require.Less(t, time.Since(start), 3*time.Second)
		_ = conn.Close()
	}

	// SOCKS5.
	require.Equal(t, byte(1), socksAuthStatus(t, w.socksAddr, "pool=badinput", "nope"), "wrong token: auth failure")
	require.Equal(t, byte(0xFF), socksNoAuthOffer(t, w.socksAddr), "no username/password offered")
	for _, c := range []struct {
		user, tok string
		reply     byte
	}{
		{"pool=badinput,colour=red", token, 0x01},
		{"pool=nosuch", token, 0x01},
		{"pool=badinput", "limited", 0x02},
	} {
		require.Equal(t, byte(0), socksAuthStatus(t, w.socksAddr, c.user, c.tok))
		require.Equal(t, c.reply, socksConnectReply(t, w.socksAddr, c.user, c.tok, tg.http.Listener.Addr().String()), c.user)
	}

	// An address type the gateway does not know: it cannot read the rest
	// of the request, answers 0x08 and closes. The request's unread bytes
	// must not turn that close into a reset that loses the answer (Linux
	// resets a connection closed with input unread): 20 tries, every one
	// reads its 0x08.
	for i := 0; i < 20; i++ {
		require.Equal(t, byte(0x08), socksUnknownAddressReply(t, w.socksAddr, "pool=badinput", token), "try %d", i)
	}

	// Barrier: a good request is leased, and is the only lease there was.
	hc := w.httpClient("pool=badinput", token, false, tg)
	code, _, hdr := get(t, hc, target)
	require.Equal(t, http.StatusOK, code)
	e.released(hdr.Get("X-Pharox-Lease-Id"))
	// Waited for too: the other worker may publish the acquired event later.
	require.Len(t, e.waitEvents(1, named("acquired", "badinput")), 1)
	require.Zero(t, e.count(named("acquired", "allowed")))
	require.Zero(t, e.stats("badinput").TotalLeases)
	require.EqualValues(t, 1, px.Total())
}

// socksAuthStatus runs the SOCKS5 greeting and RFC 1929 and returns the
// status (0 ok).
func socksAuthStatus(t *testing.T, addr, user, pass string) byte {
	t.Helper()
	conn := socksDial(t, addr)
	defer conn.Close()
	return socksAuth(t, conn, user, pass)
}

func socksDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

func socksAuth(t *testing.T, conn net.Conn, user, pass string) byte {
	t.Helper()
	_, err := conn.Write([]byte{5, 1, 2})
	require.NoError(t, err)
	var b [2]byte
	_, err = io.ReadFull(conn, b[:])
	require.NoError(t, err)
	require.Equal(t, [2]byte{5, 2}, b)
	msg := append([]byte{1, byte(len(user))}, user...)
	msg = append(append(msg, byte(len(pass))), pass...)
	_, err = conn.Write(msg)
	require.NoError(t, err)
	_, err = io.ReadFull(conn, b[:])
	require.NoError(t, err)
	require.Equal(t, byte(1), b[0])
	return b[1]
}

func socksNoAuthOffer(t *testing.T, addr string) byte {
	t.Helper()
	conn := socksDial(t, addr)
	defer conn.Close()
	_, err := conn.Write([]byte{5, 1, 0})
	require.NoError(t, err)
	var b [2]byte
	_, err = io.ReadFull(conn, b[:])
	require.NoError(t, err)
	return b[1]
}

// socksConnectReply authenticates, asks to CONNECT to target (host:port of
// an IPv4 address) and returns the reply code.
func socksConnectReply(t *testing.T, addr, user, pass, target string) byte {
	t.Helper()
	conn := socksDial(t, addr)
	defer conn.Close()
	require.Equal(t, byte(0), socksAuth(t, conn, user, pass))
	tcp, err := net.ResolveTCPAddr("tcp", target)
	require.NoError(t, err)
	req := append([]byte{5, 1, 0, 1}, tcp.IP.To4()...)
	req = append(req, byte(tcp.Port>>8), byte(tcp.Port))
	_, err = conn.Write(req)
	require.NoError(t, err)
	var reply [10]byte
	_, err = io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	return reply[1]
}

// socksUnknownAddressReply authenticates, then sends a CONNECT with
// address type 0x02 (none in RFC 1928) and bytes after it in the same
// segment, and returns the reply code.
func socksUnknownAddressReply(t *testing.T, addr, user, pass string) byte {
	t.Helper()
	conn := socksDial(t, addr)
	defer conn.Close()
	require.Equal(t, byte(0), socksAuth(t, conn, user, pass))
	_, err := conn.Write(append([]byte{5, 1, 0, 2}, make([]byte, 64)...))
	require.NoError(t, err)
	var reply [10]byte
	_, err = io.ReadFull(conn, reply[:])
	require.NoError(t, err)
	return reply[1]
}
