package health_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/model"
)

// Everything here listens on 127.0.0.1 and dials only 127.0.0.1.

// targets is the site the probes fetch, over http and https.
type targets struct {
	http, https *httptest.Server
	tls         *tls.Config // trusts the https server
	mu          sync.Mutex
	flaky       map[string]int
}

func startTargets(t *testing.T) *targets {
	t.Helper()
	tg := &targets{flaky: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "slow ok")
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("GET /header", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "yes" || r.Host != "probe.test" {
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	// /flaky?key=k&n=2 fails the first n requests of each key with 500.
	mux.HandleFunc("GET /flaky", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		tg.mu.Lock()
		tg.flaky[r.URL.Query().Get("key")]++
		seen := tg.flaky[r.URL.Query().Get("key")]
		tg.mu.Unlock()
		if seen <= n {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	tg.http = httptest.NewServer(mux)
	tg.https = httptest.NewTLSServer(mux)
	t.Cleanup(tg.http.Close)
	t.Cleanup(tg.https.Close)
	tg.tls = &tls.Config{RootCAs: tg.https.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	return tg
}

// httpProxy is an HTTP proxy: a forward proxy (absolute-URI requests,
// through net/http/httputil) and CONNECT tunnels, or CONNECT only.
type httpProxy struct {
	srv         *httptest.Server
	auth        string // required Proxy-Authorization, "" for none
	connectOnly bool
	forwards    atomic.Int64 // forwarded requests
	connects    atomic.Int64 // tunnels opened
	rp          *httputil.ReverseProxy
}

func startHTTPProxy(t *testing.T, connectOnly bool, user, pass string) *httpProxy {
	t.Helper()
	p := &httpProxy{connectOnly: connectOnly}
	if user != "" {
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	p.rp = &httputil.ReverseProxy{
		// The request already carries the absolute target URL.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.auth != "" && r.Header.Get("Proxy-Authorization") != p.auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if r.Method == http.MethodConnect {
		p.connects.Add(1)
		tunnel(w, r.Host)
		return
	}
	if p.connectOnly || !r.URL.IsAbs() {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	p.forwards.Add(1)
	p.rp.ServeHTTP(w, r)
}

func tunnel(w http.ResponseWriter, addr string) {
	dst, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		_ = dst.Close()
		return
	}
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	pipe(conn, brw.Reader, dst)
}

// pipe copies both ways until either side ends, then closes both.
func pipe(client net.Conn, fromClient io.Reader, dst net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(dst, fromClient); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, dst); done <- struct{}{} }()
	<-done
	_ = client.Close()
	_ = dst.Close()
	<-done
}

// startSOCKS5 serves SOCKS5 with github.com/armon/go-socks5, requiring
// user/pass when user is not empty.
func startSOCKS5(t *testing.T, user, pass string) int {
	t.Helper()
	conf := &socks5.Config{Logger: log.New(io.Discard, "", 0)}
	if user != "" {
		conf.Credentials = socks5.StaticCredentials{user: pass}
	}
	srv, err := socks5.New(conf)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	return port(ln)
}

// startSOCKS4 serves SOCKS4 and SOCKS4a CONNECT, the few bytes of it a test
// needs; a non-empty userID must match.
func startSOCKS4(t *testing.T, userID string) int {
	t.Helper()
	ln := listen(t)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSOCKS4(conn, userID)
		}
	}()
	return port(ln)
}

func serveSOCKS4(conn net.Conn, userID string) {
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	var head [8]byte
	if _, err := io.ReadFull(br, head[:]); err != nil || head[0] != 4 || head[1] != 1 {
		_ = conn.Close()
		return
	}
	user, err := br.ReadString(0)
	if err != nil {
		_ = conn.Close()
		return
	}
	user = user[:len(user)-1]
	host := net.IP(head[4:8]).String()
	if head[4] == 0 && head[5] == 0 && head[6] == 0 && head[7] != 0 { // SOCKS4a
		name, err := br.ReadString(0)
		if err != nil {
			_ = conn.Close()
			return
		}
		host = name[:len(name)-1]
		if host == "localhost" {
			host = "127.0.0.1" // stay on 127.0.0.1
		}
	}
	reply := func(code byte) { _, _ = conn.Write([]byte{0, code, 0, 0, 0, 0, 0, 0}) }
	if userID != "" && user != userID {
		reply(91)
		_ = conn.Close()
		return
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(head[2])<<8|int(head[3])))
	dst, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		reply(91)
		_ = conn.Close()
		return
	}
	reply(90)
	_ = conn.SetDeadline(time.Time{})
	pipe(conn, br, dst)
}

// startSilent accepts connections and never says anything.
func startSilent(t *testing.T) int {
	t.Helper()
	ln := listen(t)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return port(ln)
}

// closedPort returns a port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(ln)
	_ = ln.Close()
	return p
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

func serverPort(s *httptest.Server) int { return port(s.Listener) }

func proxyAt(protocol model.Protocol, p int, cred *model.Credentials) model.Proxy {
	return model.Proxy{ID: uuid.NewString(), Host: "127.0.0.1", Port: p, Protocol: protocol, Status: model.ProxyActive, Credentials: cred}
}

func creds(user, pass string) *model.Credentials {
	return &model.Credentials{User: user, Password: pass}
}
