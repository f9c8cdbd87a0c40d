package gateway

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/proxydial"
)

// copyBufSize is the buffer io.CopyBuffer uses when neither side can
// splice (a TLS client connection). Buffers come from a pool: a tunnel
// allocates nothing that grows with what it carries.
const copyBufSize = 32 << 10

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, copyBufSize)
}

func (b *bufPool) Put(buf []byte) { b.p.Put(&buf) }

// obtainTunnel leases a proxy for sp and opens a tunnel through it to
// target (host:port), trying other proxies as obtain does: a CONNECT
// tunnel's and a SOCKS5 connection's upstream.
func (g *Gateway) obtainTunnel(ctx context.Context, sp *spec, target string) (*use, net.Conn, *Error) {
	var upstream net.Conn
	u, gerr := g.obtain(ctx, sp, func(ctx context.Context, u *use) error {
		dctx, cancel := context.WithTimeout(ctx, g.dialTimeout)
		defer cancel()
		c, err := g.dialer.Tunnel(dctx, proxydial.FromProxy(u.proxy), target)
		upstream = c
		return err
	})
	return u, upstream, gerr
}

// carry runs an open tunnel of the given kind (KindConnect, KindSOCKS5)
// from the client's success reply to its end: reply sends it (an error:
// the client went away, and the lease is let go unused), then pipe carries
// the bytes, and the lease's use ends a success. t, the client's tracked
// connection, closes both sides from here on.
func (g *Gateway) carry(kind string, t *tunnel, u *use, client net.Conn, pending []byte, upstream net.Conn,
	target string, start time.Time, reply func() error,
) {
	closeBoth := func() { _ = client.Close(); _ = upstream.Close() }
	t.set(closeBoth)
	if err := reply(); err != nil {
		_ = client.Close()
		lingerClose(upstream, g.closeWait, 0)
		u.end(OutcomeNone, "")
		g.metrics.answered(kind, start, errClient(err))
		return
	}
	g.metrics.answered(kind, start, nil)
	u.setLost(closeBoth)
	c := g.metrics.tunnel(func() copied { return g.pipe(client, pending, upstream) })
	u.end(OutcomeSuccess, "")
	g.logTunnel(kind, u, target, c, start)
}

// copied is what a tunnel carried and how it ended.
type copied struct {
	up, down    int64 // bytes client->upstream, upstream->client
	upstreamEOF bool  // the upstream closed its side (we read its EOF)
}

// pipe carries bytes both ways between the client and the upstream until
// both directions are over, then closes both connections. pending are
// bytes the client sent that were already read (after the CONNECT line).
//
// io.CopyBuffer hands the copy to the destination's ReadFrom or the
// source's WriteTo; between two *net.TCPConn that is splice(2) on Linux,
// so the connections are passed as they are, never wrapped.
//
// The client ending its side (EOF) half-closes the upstream, which then has
// closeWait to finish. Any other end (the upstream's EOF, an error on either
// side, such as a client that closes with unread data and so resets its
// connection) closes the client at once.
//
// Whatever ended the tunnel, the upstream is never simply closed under the
// proxy: unless its EOF was already read, it is half-closed and read to its
// EOF (bounded by closeWait) before pipe returns and the caller releases the
// lease. Closing it outright would release the slot while the proxy still
// holds the connection, and the next lease on that proxy would then make it
// see more connections at once than max_concurrency allows.
func (g *Gateway) pipe(client net.Conn, pending []byte, upstream net.Conn) copied {
	type result struct {
		toUpstream bool
		n          int64
		err        error
	}
	done := make(chan result, 2)
	go func() {
		var n int64
		var err error
		if len(pending) > 0 {
			var w int
			w, err = upstream.Write(pending)
			n = int64(w)
		}
		if err == nil {
			var m int64
			m, err = g.copy(upstream, client)
			n += m
		}
		done <- result{toUpstream: true, n: n, err: err}
	}()
	go func() {
		n, err := g.copy(client, upstream)
		done <- result{n: n, err: err}
	}()
	var c copied
	record := func(r result) {
		if r.toUpstream {
			c.up = r.n
		} else {
			c.down = r.n
			c.upstreamEOF = r.err == nil
		}
	}
	first := <-done
	record(first)
	if !first.toUpstream || first.err != nil {
		// Nothing more can reach the client, or it is gone: closing it
		// ends a copy reading from or writing to it, and the past write
		// deadline ends a copy stuck writing to an upstream that stopped
		// reading (what closing the upstream used to do).
		_ = client.Close()
		_ = upstream.SetWriteDeadline(time.Now())
	}
	if !c.upstreamEOF {
		closeWrite(upstream)
		_ = upstream.SetReadDeadline(time.Now().Add(g.closeWait))
	}
	record(<-done)
	_ = client.Close()
	if !c.upstreamEOF {
		// The copy to the client stopped before the upstream's EOF (the
		// client went away): drain until the proxy has closed its side.
		drain(upstream, 0)
	}
	_ = upstream.Close()
	return c
}

// copy is io.CopyBuffer with a pooled buffer, used only when neither side
// can splice or sendfile.
func (g *Gateway) copy(dst io.Writer, src io.Reader) (int64, error) {
	buf := g.bufs.Get()
	defer g.bufs.Put(buf)
	return io.CopyBuffer(dst, src, buf)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// lingerClose closes c without cutting off what is in flight: it
// half-closes c (the peer reads all it was sent, then EOF), reads and drops
// what the peer still sends until its EOF, an error, wait or (limit > 0)
// limit bytes, then closes c. For an upstream (no limit, closeWait) this
// waits until the proxy has let go of the connection before anyone else is
// leased its slot; for a client whose request was not all read, it keeps a
// reset from dropping the reply still in flight.
func lingerClose(c net.Conn, wait time.Duration, limit int64) {
	closeWrite(c)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	drain(c, limit)
	_ = c.Close()
}

// drain reads and discards from c, at most limit bytes when limit > 0,
// until its EOF, an error or the read deadline already set on c.
func drain(c net.Conn, limit int64) {
	var r io.Reader = c
	if limit > 0 {
		r = io.LimitReader(c, limit)
	}
	_, _ = io.Copy(io.Discard, r)
}
