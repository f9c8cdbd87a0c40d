package proxytest

import (
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// HTTPConfig configures an HTTP proxy.
type HTTPConfig struct {
	// User and Password, when User is set, are required in
	// Proxy-Authorization (Basic).
	User, Password string
	// ConnectOnly refuses absolute-URI (forward) requests with 405.
	ConnectOnly bool
}

// StartHTTP starts an HTTP proxy on 127.0.0.1: absolute-URI requests are
// forwarded (httputil.ReverseProxy, keep-alive towards targets), CONNECT
// opens a tunnel.
func StartHTTP(cfg HTTPConfig) (*Proxy, error) {
	p := &Proxy{Host: "127.0.0.1"}
	ln, err := listen(&p.Counter)
	if err != nil {
		return nil, err
	}
	auth := ""
	if cfg.User != "" {
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.User+":"+cfg.Password))
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(*httputil.ProxyRequest) {}, // the request already carries the absolute target URL
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 512},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		ErrorLog:          log.New(io.Discard, "", 0),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if auth != "" && r.Header.Get("Proxy-Authorization") != auth {
				w.Header().Set("Proxy-Authenticate", `Basic realm="proxytest"`)
				w.WriteHeader(http.StatusProxyAuthRequired)
				return
			}
			if r.Method == http.MethodConnect {
				p.Requests.Add(1)
				p.Connects.Add(1)
				tunnel(w, r.Host)
				return
			}
			if cfg.ConnectOnly || !r.URL.IsAbs() {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			p.Requests.Add(1)
			p.Forwards.Add(1)
			rp.ServeHTTP(w, r)
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	p.Port = portOf(ln)
	p.close = func() { _ = srv.Close() }
	return p, nil
}

func tunnel(w http.ResponseWriter, addr string) {
	dst, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		_ = dst.Close()
		return
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = conn.Close()
		_ = dst.Close()
		return
	}
	var from io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		from = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)
	}
	pipe(conn, from, dst)
}

// pipe copies both ways until either side ends, then closes both: the
// client's connection first, so that it stops counting before the client
// can see the end.
func pipe(client net.Conn, fromClient io.Reader, dst net.Conn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(dst, fromClient); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, dst); done <- struct{}{} }()
	<-done
	_ = client.Close()
	_ = dst.Close()
	<-done
}
