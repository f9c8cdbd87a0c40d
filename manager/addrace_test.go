package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// Adds to one pool at once, through two workers, all land, and no
// added-order number is lost or handed out twice. Eight clients add 200
// proxies each while each worker gets the answers to its proxy writes late
// once, as on a loaded server: its connection holds back the first
// answer to a proxy write until the worker has sent one of its writes again
// (a write unanswered for a while is sent again). On a server that is not
// clustered the stream checks the revision before the message id, so the
// write sent again is answered with a conflict with its own first copy; the
// add must learn that its write was stored, not answer 500.
func TestConcurrentAddsOnePool(t *testing.T) {
	const clients, per = 8, 200
	srv := natstest.RunServer(t)
	var stalls []*lateAnswers
	for range 2 {
		late := &lateAnswers{mark: []byte(`{"stream":"` + kvstore.ProxiesStream + `"`), release: make(chan struct{}), sent: map[string]bool{}}
		nc, err := nats.Connect(srv.ClientURL(), nats.SetCustomDialer(late), nats.MaxReconnects(-1))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		t.Cleanup(late.end)
		workertest.Start(t, nc, workertest.Config{})
		stalls = append(stalls, late)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := client.New(natstest.Connect(t, srv))
	_, err := admin.CreatePool(ctx, model.PoolCreateRequest{Name: "crowded"})
	require.NoError(t, err)

	added := make([][]model.Proxy, clients)
	errs := make([]error, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range clients {
		cl := client.New(natstest.Connect(t, srv))
		in := make([]model.ProxyInput, per)
		for i := range in {
			in[i] = model.ProxyInput{Host: fmt.Sprintf("10.0.%d.%d", c, i), Port: 8080}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			added[c], errs[c] = cl.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "crowded", Proxies: in})
		}()
	}
	close(start)
	wg.Wait()
	held := 0
	for _, late := range stalls {
		if late.held.Load() {
			held++
			require.True(t, late.resent.Load(), "a worker held back an answer but sent no write again")
		}
	}
	require.NotZero(t, held, "no worker got an answer late: the test tested nothing")
	ids := map[string]bool{}
	for c := range clients {
		require.NoError(t, errs[c], "add of client %d", c)
		require.Len(t, added[c], per, "add of client %d", c)
		for _, p := range added[c] {
			ids[p.ID] = true
		}
	}
	require.Len(t, ids, clients*per, "proxy ids handed out twice")

	// The pool lists exactly the proxies added.
	var listed []model.Proxy
	limit := model.MaxListLimit
	req := model.ProxiesListRequest{PoolName: "crowded", Limit: &limit}
	for {
		page, err := admin.ListProxies(ctx, req)
		require.NoError(t, err)
		listed = append(listed, page.Proxies...)
		if page.NextCursor == nil {
			break
		}
		req.Cursor = page.NextCursor
	}
	require.Len(t, listed, clients*per)

	// Their added-order numbers, read from their records, are 1..1600,
	// each once.
	js, err := jetstream.New(natstest.Connect(t, srv))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	require.NoError(t, err)
	seqs := map[uint64]string{}
	for _, p := range listed {
		require.True(t, ids[p.ID], "listed proxy %s was not added", p.ID)
		e, err := kv.Get(ctx, p.ID)
		require.NoError(t, err)
		rec, err := record.DecodeProxy(e.Value())
		require.NoError(t, err)
		if other, dup := seqs[rec.Seq]; dup {
			t.Fatalf("proxies %s and %s share added order %d", other, p.ID, rec.Seq)
		}
		require.True(t, rec.Seq >= 1 && rec.Seq <= clients*per, "added order %d of proxy %s out of 1..%d", rec.Seq, p.ID, clients*per)
		seqs[rec.Seq] = p.ID
	}
	t.Logf("%d worker(s) got answers late; %d adds of %d proxies landed", held, clients, per)
}

// lateAnswers dials a worker's connection that, once, holds back the first
// bytes from the server holding an answer to a write on the stream of
// mark until the client sends a message id it has sent before: one of its
// writes sent again because its answer did not come.
type lateAnswers struct {
	mark    []byte
	release chan struct{}
	done    sync.Once
	held    atomic.Bool
	resent  atomic.Bool

	mu   sync.Mutex
	sent map[string]bool // message ids written
}

func (l *lateAnswers) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &lateConn{Conn: c, l: l}, nil
}

// end lets a held answer through (the test is over).
func (l *lateAnswers) end() { l.done.Do(func() { close(l.release) }) }

type lateConn struct {
	net.Conn
	l *lateAnswers
}

var msgIDHeader = []byte(jetstream.MsgIDHeader + ": ")

func (c *lateConn) Write(b []byte) (int, error) {
	l := c.l
	l.mu.Lock()
	for rest := b; ; {
		i := bytes.Index(rest, msgIDHeader)
		if i < 0 {
			break
		}
		rest = rest[i+len(msgIDHeader):]
		id, _, _ := bytes.Cut(rest, []byte("\r\n"))
		if l.sent[string(id)] && l.held.Load() {
			l.resent.Store(true)
			l.end()
		}
		l.sent[string(id)] = true
	}
	l.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *lateConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && bytes.Contains(b[:n], c.l.mark) && c.l.held.CompareAndSwap(false, true) {
		<-c.l.release
	}
	return n, err
}
