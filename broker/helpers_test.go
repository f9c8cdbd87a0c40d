package broker_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/schemas"
)

// requestTimeout bounds every request a test sends.
const requestTimeout = 10 * time.Second

// srvRequest asks a $SRV subject of one broker instance and decodes the
// reply.
func srvRequest[T any](t testing.TB, nc *nats.Conn, verb micro.Verb, id string) T {
	t.Helper()
	subject, err := micro.ControlSubject(verb, broker.ServiceName, id)
	require.NoError(t, err)
	return srvReply[T](t, nc, subject)
}

// srvReply sends an empty request to a $SRV subject and decodes the reply.
func srvReply[T any](t testing.TB, nc *nats.Conn, subject string) T {
	t.Helper()
	msg, err := nc.Request(subject, nil, requestTimeout)
	require.NoError(t, err, subject)
	var v T
	require.NoError(t, json.Unmarshal(msg.Data, &v), "%s: %s", subject, msg.Data)
	return v
}

var (
	schemaOnce sync.Once
	schemaSet  *schemas.Set
	schemaErr  error
)

// contractSchemas loads the contract's schemas once for the package.
func contractSchemas(t testing.TB) *schemas.Set {
	t.Helper()
	schemaOnce.Do(func() { schemaSet, schemaErr = schemas.Load() })
	require.NoError(t, schemaErr)
	return schemaSet
}

// fakeClock is a store clock the test moves by hand.
type fakeClock = workertest.Clock

func newFakeClock() *fakeClock { return workertest.NewClock() }

// env is one embedded server with its workers, a client connection and a
// capture of every event published on pharox.events.*.
type env struct {
	t       testing.TB
	srv     *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	workers []*workertest.Worker
	clock   *fakeClock
	sch     *schemas.Set

	evSub *nats.Subscription
	evMu  sync.Mutex
	evs   []*nats.Msg

	// skipStreamCheck is set by tests that take JetStream away.
	skipStreamCheck bool
}

type envConfig struct {
	workers int
	cfg     workertest.Config
	// realClock leaves the store on time.Now.
	realClock bool
}

// newEnv starts a server, n workers (each on its own connection) and the
// event capture. At the end of the test every captured event is checked
// against its schema and against the PHAROX_EVENTS stream.
func newEnv(t testing.TB, ec envConfig) *env {
	t.Helper()
	e := newServerEnv(t)
	sub, err := e.nc.SubscribeSync("pharox.events.*")
	require.NoError(t, err)
	require.NoError(t, sub.SetPendingLimits(-1, -1))
	e.evSub = sub
	require.NoError(t, e.nc.Flush())
	if ec.workers == 0 {
		ec.workers = 1
	}
	cfg := ec.cfg
	if !ec.realClock && cfg.Clock == nil {
		e.clock = newFakeClock()
		cfg.Clock = e.clock.Now
	}
	for i := 0; i < ec.workers; i++ {
		e.workers = append(e.workers, startWorker(t, e.srv, cfg))
	}
	// Registered after the workers, so it runs before they stop.
	t.Cleanup(e.checkEvents)
	return e
}

// newServerEnv is what newEnv and newQuietEnv start from: a server, the
// test's connection to it and its JetStream, and no workers yet.
func newServerEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, sch: contractSchemas(t)}
	e.srv = natstest.RunServer(t)
	e.nc = natstest.Connect(t, e.srv)
	js, err := jetstream.New(e.nc)
	require.NoError(t, err)
	e.js = js
	return e
}

// startWorker starts a worker on a connection of its own and waits until the
// server has its subscriptions, so the first request finds a responder.
func startWorker(t testing.TB, srv *server.Server, cfg workertest.Config) *workertest.Worker {
	t.Helper()
	wnc := natstest.Connect(t, srv)
	w := workertest.Start(t, wnc, cfg)
	require.NoError(t, wnc.Flush())
	return w
}

// body turns a request value into bytes: []byte and string are sent as they
// are, anything else is JSON-encoded.
func body(t testing.TB, req any) []byte {
	t.Helper()
	switch v := req.(type) {
	case nil:
		return nil
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	b, err := json.Marshal(req)
	require.NoError(t, err)
	return b
}

// raw sends a request to prefix.op and returns the reply message.
func (e *env) raw(op string, data []byte) *nats.Msg {
	e.t.Helper()
	msg, err := e.nc.Request("pharox."+op, data, requestTimeout)
	require.NoError(e.t, err, "request %s", op)
	return msg
}

func reqSchema(t testing.TB, op string) (string, string) {
	t.Helper()
	req, rep, ok := schemas.Operation(op)
	require.True(t, ok, "no schema for operation %s", op)
	return req, rep
}

// requireValidRequest asserts the request body conforms to op's request schema.
func (e *env) requireValidRequest(op string, data []byte) {
	e.t.Helper()
	reqName, _ := reqSchema(e.t, op)
	require.NoError(e.t, e.sch.Validate(reqName, data), "request %s %s should conform to %s", op, data, reqName)
}

// requireInvalidRequest asserts the schema refuses the request body.
func (e *env) requireInvalidRequest(op string, data []byte) {
	e.t.Helper()
	reqName, _ := reqSchema(e.t, op)
	require.Error(e.t, e.sch.Validate(reqName, data), "request %s %s should not conform to %s", op, data, reqName)
}

// ok sends a well-formed request (checked against its schema), requires a
// successful reply and checks it against the reply schema.
func (e *env) ok(op string, req any) []byte {
	e.t.Helper()
	data := body(e.t, req)
	e.requireValidRequest(op, data)
	msg := e.raw(op, data)
	require.Empty(e.t, msg.Header.Get(micro.ErrorCodeHeader), "%s %s failed: %s", op, data, msg.Data)
	require.Empty(e.t, msg.Header.Get(micro.ErrorHeader), "%s %s failed: %s", op, data, msg.Data)
	_, repName := reqSchema(e.t, op)
	require.NoError(e.t, e.sch.Validate(repName, msg.Data), "reply of %s: %s", op, msg.Data)
	return msg.Data
}

// okInto is ok decoding the reply into out.
func (e *env) okInto(op string, req, out any) {
	e.t.Helper()
	data := e.ok(op, req)
	require.NoError(e.t, json.Unmarshal(data, out), "reply of %s: %s", op, data)
}

// fail sends a request that must fail with status and code. It checks both
// micro headers, the error schema, that the body is exactly
// {"error":{"code","message"}} and that the header message is the body's.
func (e *env) fail(op string, req any, status int, code string) model.ErrorDetail {
	e.t.Helper()
	data := body(e.t, req)
	return e.failRaw(op, data, status, code)
}

func (e *env) failRaw(op string, data []byte, status int, code string) model.ErrorDetail {
	e.t.Helper()
	msg := e.raw(op, data)
	return requireErrorReply(e.t, e.sch, msg, status, code)
}

func requireErrorReply(t testing.TB, sch *schemas.Set, msg *nats.Msg, status int, code string) model.ErrorDetail {
	t.Helper()
	require.Equal(t, strconv.Itoa(status), msg.Header.Get(micro.ErrorCodeHeader), "header %s, body %s", micro.ErrorCodeHeader, msg.Data)
	hdrMsg := msg.Header.Get(micro.ErrorHeader)
	require.NotEmpty(t, hdrMsg, "header %s", micro.ErrorHeader)
	require.NoError(t, sch.Validate("error", msg.Data), "error body %s", msg.Data)
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(msg.Data, &top))
	require.Len(t, top, 1, "error body has only the key error: %s", msg.Data)
	var eb model.ErrorBody
	require.NoError(t, json.Unmarshal(msg.Data, &eb))
	require.Equal(t, code, eb.Error.Code, "error body %s", msg.Data)
	require.NotEmpty(t, eb.Error.Message)
	want := strings.NewReplacer("\r", " ", "\n", " ").Replace(eb.Error.Message)
	require.Equal(t, want, hdrMsg, "the header carries the body's message")
	return eb.Error
}

// failWellFormed is fail for a request that conforms to its schema and is
// refused for the state it meets (403, 404, 409).
func (e *env) failWellFormed(op string, req any, status int, code string) model.ErrorDetail {
	e.t.Helper()
	data := body(e.t, req)
	e.requireValidRequest(op, data)
	return e.failRaw(op, data, status, code)
}

// --- convenience calls -----------------------------------------------------

func (e *env) createPool(name string) model.ProxyPool {
	e.t.Helper()
	var p model.ProxyPool
	e.okInto("admin.pools.create", map[string]any{"name": name}, &p)
	require.Equal(e.t, name, p.Name)
	return p
}

func (e *env) addProxies(pool string, proxies ...map[string]any) []model.Proxy {
	e.t.Helper()
	var rep model.ProxiesReply
	e.okInto("admin.proxies.add", map[string]any{"pool_name": pool, "proxies": proxies}, &rep)
	require.Len(e.t, rep.Proxies, len(proxies))
	return rep.Proxies
}

func (e *env) acquire(req map[string]any) model.AcquireReply {
	e.t.Helper()
	var rep model.AcquireReply
	e.okInto("acquire", req, &rep)
	return rep
}

func (e *env) mustAcquire(req map[string]any) (model.Lease, model.Proxy) {
	e.t.Helper()
	rep := e.acquire(req)
	require.NotNil(e.t, rep.Lease, "acquire %v found no proxy", req)
	require.NotNil(e.t, rep.Proxy)
	return *rep.Lease, *rep.Proxy
}

func (e *env) release(leaseID string) model.Lease {
	e.t.Helper()
	return e.leaseOp("release", leaseID)
}

func (e *env) getLease(id string) model.Lease {
	e.t.Helper()
	return e.leaseOp("leases.get", id)
}

// leaseOp sends op for the lease leaseID, requires success and returns the
// lease of the reply.
func (e *env) leaseOp(op, leaseID string) model.Lease {
	e.t.Helper()
	var rep model.LeaseReply
	e.okInto(op, map[string]any{"lease_id": leaseID}, &rep)
	require.NotNil(e.t, rep.Lease)
	return *rep.Lease
}

func (e *env) getProxy(id string) model.Proxy {
	e.t.Helper()
	var p model.Proxy
	e.okInto("admin.proxies.get", map[string]any{"proxy_id": id}, &p)
	return p
}

func (e *env) stats(pool string) model.PoolStatsSnapshot {
	e.t.Helper()
	var st model.PoolStatsSnapshot
	e.okInto("stats", map[string]any{"pool_name": pool}, &st)
	return st
}

// counts are the numbers of a PoolStatsSnapshot, without its time.
type counts struct{ Total, Active, Available, Leased, Leases int }

func countsOf(st model.PoolStatsSnapshot) counts {
	return counts{st.TotalProxies, st.ActiveProxies, st.AvailableProxies, st.LeasedProxies, st.TotalLeases}
}

func (e *env) listAll(pool string) []model.Proxy {
	e.t.Helper()
	var page model.ProxiesPage
	e.okInto("admin.proxies.list", map[string]any{"pool_name": pool, "limit": 1000}, &page)
	require.Nil(e.t, page.NextCursor)
	return page.Proxies
}

// --- events ----------------------------------------------------------------

// syncEvents waits until every event the workers published so far is
// acknowledged by the stream and delivered to the capture.
func (e *env) syncEvents() {
	e.t.Helper()
	workertest.FlushEvents(e.t, e.workers...)
	e.drainEvents()
}

// drainEvents moves what the subscription holds into the capture. After a
// publisher's Flush the server has queued those messages to this connection
// ahead of the PONG that ends nc.Flush, so they are all pending by then.
func (e *env) drainEvents() {
	e.t.Helper()
	require.NoError(e.t, e.nc.Flush())
	for {
		msg, err := e.evSub.NextMsg(5 * time.Millisecond)
		if err != nil {
			break
		}
		e.evMu.Lock()
		e.evs = append(e.evs, msg)
		e.evMu.Unlock()
	}
}

// events returns the captured events named name (the last subject token),
// after syncing.
func (e *env) events(name string) []*nats.Msg {
	e.t.Helper()
	e.syncEvents()
	e.evMu.Lock()
	defer e.evMu.Unlock()
	var out []*nats.Msg
	for _, m := range e.evs {
		if m.Subject == "pharox.events."+name {
			out = append(out, m)
		}
	}
	return out
}

func (e *env) eventCount() int {
	e.t.Helper()
	e.syncEvents()
	e.evMu.Lock()
	defer e.evMu.Unlock()
	return len(e.evs)
}

// decodeEvents validates and decodes events of one kind.
func decodeEvents[T any](t testing.TB, sch *schemas.Set, msgs []*nats.Msg) []T {
	t.Helper()
	out := make([]T, 0, len(msgs))
	for _, m := range msgs {
		name, ok := schemas.Event(m.Subject[strings.LastIndex(m.Subject, ".")+1:])
		require.True(t, ok, "unknown event subject %s", m.Subject)
		require.NoError(t, sch.Validate(name, m.Data), "event %s: %s", m.Subject, m.Data)
		var v T
		require.NoError(t, json.Unmarshal(m.Data, &v))
		out = append(out, v)
	}
	return out
}

// checkEvents runs at the end of every test: each captured event conforms to
// its schema and carries a unique Nats-Msg-Id, and PHAROX_EVENTS holds
// exactly the captured events.
func (e *env) checkEvents() {
	t := e.t
	if t.Failed() {
		return
	}
	for _, w := range e.workers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.Events.Flush(ctx)
		cancel()
		if err != nil {
			t.Errorf("flush events: %v", err)
			return
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Errorf("flush: %v", err)
		return
	}
	for {
		msg, err := e.evSub.NextMsg(5 * time.Millisecond)
		if err != nil {
			break
		}
		e.evs = append(e.evs, msg)
	}
	ids := map[string]string{}
	for _, m := range e.evs {
		token := m.Subject[strings.LastIndex(m.Subject, ".")+1:]
		name, ok := schemas.Event(token)
		if !ok {
			t.Errorf("event on unknown subject %s", m.Subject)
			continue
		}
		if err := e.sch.Validate(name, m.Data); err != nil {
			t.Errorf("event %s does not conform: %v\n%s", m.Subject, err, m.Data)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		if id == "" {
			t.Errorf("event %s has no %s header", m.Subject, jetstream.MsgIDHeader)
			continue
		}
		if prev, dup := ids[id]; dup {
			t.Errorf("%s %s used by two events: %s and %s", jetstream.MsgIDHeader, id, prev, m.Data)
		}
		ids[id] = string(m.Data)
	}
	if e.skipStreamCheck {
		return
	}
	stored := e.streamEvents(t)
	if len(stored) != len(e.evs) {
		t.Errorf("%s holds %d events, %d were published", events.StreamName, len(stored), len(e.evs))
	}
	seen := map[string]bool{}
	for _, m := range stored {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if seen[id] {
			t.Errorf("%s stores %s %s twice", events.StreamName, jetstream.MsgIDHeader, id)
		}
		seen[id] = true
		data, ok := ids[id]
		if !ok {
			t.Errorf("%s holds event %s (%s) that no subscriber saw", events.StreamName, id, m.Subject)
			continue
		}
		if data != string(m.Data) {
			t.Errorf("stored event %s differs from the published one", id)
		}
	}
}

// streamEvents reads every message of PHAROX_EVENTS.
func (e *env) streamEvents(t testing.TB) []*jetstream.RawStreamMsg {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Errorf("stream %s: %v", events.StreamName, err)
		return nil
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Errorf("stream info: %v", err)
		return nil
	}
	if got := info.Config.Subjects; len(got) != 1 || got[0] != "pharox.events.>" {
		t.Errorf("stream subjects %v, want [pharox.events.>]", got)
	}
	var out []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Errorf("stream message %d: %v", seq, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// --- state snapshots for "nothing changed" --------------------------------

// snapshot is what an observer can read of the state, minus read times.
type snapshot struct {
	Pools     string
	Consumers string
	Stats     map[string]counts
	Proxies   map[string]string
	Leases    map[string]string
	Events    int
}

func (e *env) snapshot(pools []string, leaseIDs []string) snapshot {
	e.t.Helper()
	s := snapshot{Stats: map[string]counts{}, Proxies: map[string]string{}, Leases: map[string]string{}}
	s.Pools = string(e.ok("admin.pools.list", "{}"))
	s.Consumers = string(e.ok("admin.consumers.list", "{}"))
	for _, p := range pools {
		s.Stats[p] = countsOf(e.stats(p))
		s.Proxies[p] = string(e.ok("admin.proxies.list", map[string]any{"pool_name": p, "limit": 1000}))
	}
	for _, id := range leaseIDs {
		s.Leases[id] = string(e.ok("leases.get", map[string]any{"lease_id": id}))
	}
	s.Events = e.eventCount()
	return s
}

func ptr[T any](v T) *T { return &v }
