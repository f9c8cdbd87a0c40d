package proxytest

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"strconv"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// StartSOCKS5 starts a SOCKS5 proxy (github.com/armon/go-socks5) on
// 127.0.0.1, requiring user/pass when user is not empty.
func StartSOCKS5(user, pass string) (*Proxy, error) {
	p := &Proxy{Host: "127.0.0.1"}
	conf := &socks5.Config{Logger: log.New(io.Discard, "", 0)}
	if user != "" {
		conf.Credentials = socks5.StaticCredentials{user: pass}
	}
	conf.Rules = countRule{p}
	srv, err := socks5.New(conf)
	if err != nil {
		return nil, err
	}
	ln, err := listen(&p.Counter)
	if err != nil {
		return nil, err
	}
	go func() { _ = srv.Serve(ln) }()
	p.Port = portOf(ln)
	p.close = func() { _ = ln.Close() }
	return p, nil
}

// countRule allows every request and counts it.
type countRule struct{ p *Proxy }

func (r countRule) Allow(ctx context.Context, _ *socks5.Request) (context.Context, bool) {
	r.p.Requests.Add(1)
	return ctx, true
}

// StartSOCKS4 starts a SOCKS4/SOCKS4a CONNECT proxy on 127.0.0.1 (the few
// bytes of it a test needs); a non-empty userID must match. A SOCKS4a host
// name "localhost" is reached on 127.0.0.1.
func StartSOCKS4(userID string) (*Proxy, error) {
	p := &Proxy{Host: "127.0.0.1"}
	ln, err := listen(&p.Counter)
	if err != nil {
		return nil, err
	}
	go acceptEach(ln, func(conn net.Conn) { serveSOCKS4(p, conn, userID) })
	p.Port = portOf(ln)
	p.close = func() { _ = ln.Close() }
	return p, nil
}

func serveSOCKS4(p *Proxy, conn net.Conn, userID string) {
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
			host = "127.0.0.1"
		}
	}
	reply := func(code byte) { _, _ = conn.Write([]byte{0, code, 0, 0, 0, 0, 0, 0}) }
	if userID != "" && user != userID {
		reply(91)
		_ = conn.Close()
		return
	}
	dst, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(int(head[2])<<8|int(head[3]))), 5*time.Second)
	if err != nil {
		reply(91)
		_ = conn.Close()
		return
	}
	p.Requests.Add(1)
	reply(90)
	_ = conn.SetDeadline(time.Time{})
	var from io.Reader = conn
	if n := br.Buffered(); n > 0 {
		from = io.MultiReader(io.LimitReader(br, int64(n)), conn)
	}
	pipe(conn, from, dst)
}
