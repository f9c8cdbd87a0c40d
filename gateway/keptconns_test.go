package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/model"
)

// scriptedProxy is an HTTP forward proxy on 127.0.0.1 that answers each
// request by its path with a fixed raw answer, and records what it got:
// what the gateway does on the wire, byte for byte, and each edge of
// keep-alive on demand.
type scriptedProxy struct {
	port  int
	conns atomic.Int64

	mu   sync.Mutex
	reqs []seenRequest
}

// seenRequest is a request as the proxy read it, and on which of its
// connections (1 for the first).
type seenRequest struct {
	method, uri string
	header      http.Header
	body        string
	conn        int64
}

// Raw answers by path. "close" answers and then closes the connection
// without saying so, as a proxy whose keep-alive timeout ran out does
// between two requests; "nolength" has no length and ends with the
// connection; "hints" sends 103 Early Hints first; "trailer" is chunked
// with a trailer; "hop" names a hop-by-hop header of its own; "hangup"
// closes the connection without answering.
var scriptedAnswers = map[string]string{
	"/ok":       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok",
	"/close":    "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nclosed",
	"/nolength": "HTTP/1.1 200 OK\r\n\r\nto the end",
	"/hints":    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
	"/trailer":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
	"/204":      "HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n",
	"/hop":      "HTTP/1.1 200 OK\r\nConnection: X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\n\r\nhop",
}

func startScriptedProxy(t testing.TB) *scriptedProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &scriptedProxy{port: ln.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := p.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c, n)
			}()
		}
	}()
	return p
}

func (p *scriptedProxy) serve(c net.Conn, n int64) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		p.mu.Lock()
		p.reqs = append(p.reqs, seenRequest{method: req.Method, uri: req.RequestURI, header: req.Header, body: string(body), conn: n})
		p.mu.Unlock()
		u, err := req.URL.Parse(req.RequestURI)
		if err != nil {
			return
		}
		answer, ok := scriptedAnswers[u.Path]
		if !ok { // "/hangup" and anything unknown
			return
		}
		if req.Method == http.MethodHead {
			answer, _, _ = strings.Cut(answer, "\r\n\r\n")
			answer += "\r\n\r\n"
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		if u.Path == "/close" || u.Path == "/nolength" {
			return
		}
	}
}

// last is the last request the proxy read.
func (p *scriptedProxy) last(t testing.TB) seenRequest {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(t, p.reqs)
	return p.reqs[len(p.reqs)-1]
}

// TestSessionKeptConnections: a session's requests without a body go to
// its proxy over kept-alive connections, with what ReverseProxy and
// http.Transport did for them kept: the proxy's own credentials instead of
// the client's, hop-by-hop headers removed both ways, the client's
// X-Forwarded-For not passed on, 1xx answers and trailers passed on, HEAD
// and 204 answers without a body, a connection the proxy closed while idle
// replaced without failing the session, an answer without a length read to
// its end, and a proxy hanging up on a request answered 502. A request
// with a body is streamed as before.
func TestSessionKeptConnections(t *testing.T) {
	t.Parallel()
	e, _, w := envWithGateway(t, gateway.WithRetries(0))
	p := startScriptedProxy(t)
	pxs := e.pool("kept", 0, upstream{protocol: model.ProtocolHTTP, host: "127.0.0.1", port: p.port,
		creds: &model.Credentials{User: "bot", Password: "s3cret"}})
	const site = "http://site.example"
	hc := w.httpClient("pool=kept,session=k1", token, true, nil)
	do := func(method, path string, hdr http.Header, body io.Reader) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, site+path, body)
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := hc.Do(req)
		require.NoError(t, err, path)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err, path)
		require.NoError(t, resp.Body.Close())
		return resp, string(b)
	}

	resp, body := do("GET", "/ok", http.Header{"X-Forwarded-For": {"10.0.0.1"}, "Connection": {"X-Hop"}, "X-Hop": {"1"},
		"X-Client": {"c"}}, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "ok", body)
	require.Equal(t, "1", resp.Header.Get("X-Up"))
	lease := resp.Header.Get(gateway.HeaderLeaseID)
	require.NotEmpty(t, lease)
	require.Equal(t, pxs[0].ID, resp.Header.Get(gateway.HeaderProxyID))
	seen := p.last(t)
	require.Equal(t, site+"/ok", seen.uri, "an absolute URI to an http proxy")
	require.Equal(t, "Basic Ym90OnMzY3JldA==", seen.header.Get("Proxy-Authorization"), "the proxy's own credentials, not the client's")
	require.Empty(t, seen.header.Values("X-Forwarded-For"))
	require.Empty(t, seen.header.Values("X-Hop"), "a header the client's Connection names is hop-by-hop")
	require.Equal(t, "c", seen.header.Get("X-Client"))
	require.Equal(t, "Go-http-client/1.1", seen.header.Get("User-Agent"), "the client's user agent")

	for range 3 {
		resp, body = do("GET", "/ok", nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		require.Equal(t, lease, resp.Header.Get(gateway.HeaderLeaseID))
	}
	resp, body = do("HEAD", "/ok", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	resp, body = do("GET", "/204", nil, nil)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("X-Up"))
	require.Empty(t, body)
	resp, body = do("GET", "/hop", nil, nil)
	require.Equal(t, "hop", body)
	require.Empty(t, resp.Header.Values("X-Up-Hop"), "the proxy's hop-by-hop headers stay between it and the gateway")
	require.Empty(t, resp.Header.Values("Keep-Alive"))
	require.EqualValues(t, 1, p.conns.Load(), "one kept-alive connection carried them all")

	// Closed by the proxy while idle: the next request goes on a new one.
	_, body = do("GET", "/close", nil, nil)
	require.Equal(t, "closed", body)
	resp, body = do("GET", "/ok", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, lease, resp.Header.Get(gateway.HeaderLeaseID), "the session did not fail")
	require.EqualValues(t, 2, p.conns.Load())

	// No length: the answer ends with the connection, which is not reused.
	resp, body = do("GET", "/nolength", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "to the end", body)
	_, body = do("GET", "/ok", nil, nil)
	require.Equal(t, "ok", body)
	require.EqualValues(t, 3, p.conns.Load())

	// 1xx answers reach the client, trailers too.
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", site+"/hints", nil)
	require.NoError(t, err)
	resp, err = hc.Do(req)
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, "hints", string(b))
	require.Equal(t, []string{"103 </style.css>; rel=preload"}, hints)
	resp, err = hc.Get(site + "/trailer")
	require.NoError(t, err)
	b, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, "abc", string(b))
	require.Equal(t, "42", resp.Trailer.Get("X-Sum"))

	// A body is streamed to the proxy as before.
	resp, body = do("POST", "/ok", nil, strings.NewReader("payload"))
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "payload", p.last(t).body)
	require.Equal(t, "Basic Ym90OnMzY3JldA==", p.last(t).header.Get("Proxy-Authorization"))
	require.Equal(t, lease, resp.Header.Get(gateway.HeaderLeaseID))

	// Hanging up on a request on a new connection is the proxy's failure.
	resp, body = do("GET", "/hangup", nil, nil)
	require.Equal(t, http.StatusBadGateway, resp.StatusCode, body)
	require.Contains(t, body, "upstream_failed")
	rel := e.released(lease)
	require.NotNil(t, rel.Outcome)
	require.Equal(t, model.OutcomeFailure, *rel.Outcome, "the session's lease is released as failed")
}
