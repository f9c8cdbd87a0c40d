package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	pclient "github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// gatewayScenario is the number of the gateway scenario in --scenarios.
const gatewayScenario = 8

const (
	gatewayToken    = "bench-token"
	gatewayPoolSize = 100
)

// gatewayBench is everything the gateway scenario runs on, on loopback:
// a NATS server and a worker in this process, a target site, one upstream
// HTTP proxy (forward and CONNECT) and the gateway.
type gatewayBench struct {
	srv      *server.Server
	conns    []*nats.Conn
	worker   *workertest.Worker
	c        *pclient.Client
	target   *http.Server
	targetLn net.Listener
	upstream *proxytest.Proxy
	g        *gateway.Gateway
	gwAddr   string
	pool     string
	dir      string
}

func newGatewayBench(ctx context.Context) (*gatewayBench, error) {
	b := &gatewayBench{pool: "gw-bench-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)}
	dir, err := os.MkdirTemp("", "pharox-bench-gateway-")
	if err != nil {
		return nil, err
	}
	b.dir = dir
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true,
		StoreDir: dir, MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("gateway bench: NATS server not ready")
	}
	b.srv = srv
	conn := func() (*nats.Conn, error) {
		nc, err := nats.Connect(srv.ClientURL())
		if err == nil {
			b.conns = append(b.conns, nc)
		}
		return nc, err
	}
	wnc, err := conn()
	if err != nil {
		b.close()
		return nil, err
	}
	if b.worker, err = workertest.New(ctx, wnc, workertest.Config{Prefix: prefix}); err != nil {
		b.close()
		return nil, err
	}
	cnc, err := conn()
	if err != nil {
		b.close()
		return nil, err
	}
	b.c = pclient.New(cnc, pclient.WithPrefix(prefix), pclient.WithTimeout(30*time.Second))

	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	chunk := make([]byte, 64<<10)
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			m := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	if b.targetLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.close()
		return nil, err
	}
	b.target = &http.Server{Handler: mux}
	// Every side's goroutines carry a label (see --gateway-cpuprofile).
	go pprof.Do(ctx, pprof.Labels("side", "target"), func(context.Context) { _ = b.target.Serve(b.targetLn) })
	pprof.Do(ctx, pprof.Labels("side", "upstream"), func(context.Context) {
		b.upstream, err = proxytest.StartHTTP(proxytest.HTTPConfig{User: "bot", Password: "s3cret"})
	})
	if err != nil {
		b.close()
		return nil, err
	}
	if _, err := b.c.CreatePool(ctx, model.PoolCreateRequest{Name: b.pool}); err != nil {
		b.close()
		return nil, err
	}
	// 100 proxies, all the same upstream: leases spread over 100 records,
	// as in a real pool, instead of contending for one.
	proto := model.ProtocolHTTP
	in := make([]model.ProxyInput, gatewayPoolSize)
	for i := range in {
		in[i] = model.ProxyInput{Host: b.upstream.Host, Port: b.upstream.Port, Protocol: &proto,
			Credentials: &model.Credentials{User: "bot", Password: "s3cret"}}
	}
	if _, err := b.c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: b.pool, Proxies: in}); err != nil {
		b.close()
		return nil, err
	}

	gnc, err := conn()
	if err != nil {
		b.close()
		return nil, err
	}
	tokens, err := gateway.ParseTokens(strings.NewReader(gatewayToken))
	if err != nil {
		b.close()
		return nil, err
	}
	b.g, err = gateway.New(gateway.NewClientLeaser(pclient.New(gnc, pclient.WithPrefix(prefix))), gateway.WithTokens(tokens))
	if err != nil {
		b.close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.close()
		return nil, err
	}
	b.gwAddr = ln.Addr().String()
	// The label follows every goroutine the gateway starts (connections,
	// handlers, its upstream transports' dials and loops), so that a
	// profile of this process can be cut down to the gateway's share.
	// Goroutines that do no work of their own (the scheduler, the GC's
	// background workers) carry none.
	go pprof.Do(ctx, pprof.Labels("side", "gateway"), func(context.Context) { _ = b.g.ServeHTTPProxy(ln) })
	return b, nil
}

func (b *gatewayBench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b.g != nil {
		_ = b.g.Shutdown(ctx)
	}
	if b.upstream != nil {
		b.upstream.Close()
	}
	if b.target != nil {
		_ = b.target.Close()
	}
	if b.worker != nil {
		b.worker.Stop()
	}
	for _, nc := range b.conns {
		nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

func addTarget(rep *report, t target) {
	t.Met = t.Measured >= t.Needed
	rep.Targets = append(rep.Targets, t)
}

// viaGateway and direct are the proxy URLs of the two paths compared.
func (b *gatewayBench) viaGateway(user string) *url.URL {
	return &url.URL{Scheme: "http", Host: b.gwAddr, User: url.UserPassword(user, gatewayToken)}
}

func (b *gatewayBench) direct() *url.URL {
	return &url.URL{Scheme: "http", Host: b.upstream.Addr(), User: url.UserPassword("bot", "s3cret")}
}

// loopResult is a closed loop's outcome.
type loopResult struct {
	ops, errs int64
	seconds   float64
	lat       []time.Duration // sorted
	firstErr  error
	cpu       time.Duration // this process's CPU over the loop: clients, gateway, upstream, target, NATS
}

// add is r and o counted together, as one loop.
func (r loopResult) add(o loopResult) loopResult {
	r.ops += o.ops
	r.errs += o.errs
	r.seconds += o.seconds
	r.cpu += o.cpu
	r.lat = append(r.lat, o.lat...)
	sort.Slice(r.lat, func(a, b int) bool { return r.lat[a] < r.lat[b] })
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	return r
}

// cpuPerOp is the loop's CPU µs per operation, in the srv+bench column:
// the NATS server runs in this process, so its share is in the bench's.
func (r loopResult) cpuPerOp() string {
	return cpuUse{bench: r.cpu, known: true}.perOp(r.ops)
}

func (r loopResult) perSecond() float64 { return float64(r.ops) / r.seconds }

// gwLoop runs clients that each call fn back to back for d.
func gwLoop(ctx context.Context, clients int, d time.Duration, fn func(i int) error) loopResult {
	var ops, errs atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, clients)
	start := time.Now()
	end := start.Add(d)
	cpu0 := selfCPU()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("side", "client"), func(context.Context) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				if err := fn(i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	r := loopResult{ops: ops.Load(), errs: errs.Load(), seconds: time.Since(start).Seconds(), cpu: selfCPU() - cpu0}
	for _, l := range lat {
		r.lat = append(r.lat, l...)
	}
	sort.Slice(r.lat, func(a, b int) bool { return r.lat[a] < r.lat[b] })
	if e, ok := firstErr.Load().(error); ok {
		r.firstErr = e
	}
	return r
}

// getter does GETs through a proxy, keeping the connection to it alive.
func getter(proxy *url.URL, clients int) func(i int, target string) error {
	hcs := make([]*http.Client, clients)
	for i := range hcs {
		hcs[i] = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy), MaxIdleConnsPerHost: 1}, Timeout: 30 * time.Second}
	}
	return func(i int, target string) error {
		resp, err := hcs[i].Get(target)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
}

// tunnelDownload opens a CONNECT tunnel through proxy to the target and
// reads n bytes of /bytes through it.
func tunnelDownload(proxy *url.URL, target string, n int64) error {
	conn, err := net.Dial("tcp", proxy.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	pass, _ := proxy.User.Password()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target, Header: http.Header{}}
	req.SetBasicAuth(proxy.User.Username(), pass)
	req.Header.Set("Proxy-Authorization", req.Header.Get("Authorization"))
	req.Header.Del("Authorization")
	if err := req.Write(conn); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CONNECT: %s", resp.Status)
	}
	if _, err := fmt.Fprintf(conn, "GET /bytes?n=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", n, target); err != nil {
		return err
	}
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	got, err := io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	if err == nil && got != n {
		err = fmt.Errorf("read %d of %d bytes", got, n)
	}
	return err
}

// startProfile starts a CPU profile into path ("" for none) and returns
// what stops it.
func startProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// runGatewayScenario measures the gateway against the same upstream proxy
// used directly, and rotation against the workers' own pair rate, all in
// this run.
func runGatewayScenario(ctx context.Context, cfg benchConfig, rep *report) error {
	started := time.Now()
	progress("scenario %d: gateway, against one loopback upstream HTTP proxy used directly", gatewayScenario)
	b, err := newGatewayBench(ctx)
	if err != nil {
		return fmt.Errorf("gateway bench: %w", err)
	}
	defer b.close()
	const scn = "8 gateway"
	add := func(r row) {
		r.Scenario = scn
		rep.Rows = append(rep.Rows, r)
		progress("  %s / %s: %.0f %s", r.Scenario, r.Case, r.Value, r.Unit)
	}
	site := b.targetLn.Addr().String()
	okURL := "http://" + site + "/ok"
	check := func(what string, r loopResult) error {
		if r.ops == 0 {
			return fmt.Errorf("%s: nothing completed (%d errors, first: %v)", what, r.errs, r.firstErr)
		}
		return nil
	}
	note := func(r loopResult) string {
		if r.errs > 0 {
			return fmt.Sprintf("%d errors, first: %v", r.errs, r.firstErr)
		}
		return ""
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	// rateRow is the row of a loop's rate, with its latencies and errors.
	rateRow := func(name, unit string, r loopResult) row {
		return row{Case: name, Value: r.perSecond(), Unit: unit, P50Ms: ms(pct(r.lat, 0.5)), P99Ms: ms(pct(r.lat, 0.99)),
			CPU: r.cpuPerOp(), Note: note(r)}
	}
	// ratioTo is rw with its rate's ratio to base's, named of.
	ratioTo := func(rw row, base loopResult, of string) row {
		rw.Ratio, rw.RatioOf = rw.Value/base.perSecond(), of
		return rw
	}

	// Bulk transfer through CONNECT tunnels, 4 at a time.
	const streams, size = 4, 64 << 20
	bulk := func(p *url.URL) loopResult {
		return gwLoop(ctx, streams, cfg.duration, func(int) error { return tunnelDownload(p, site, size) })
	}
	direct := bulk(b.direct())
	via := bulk(b.viaGateway("pool=" + b.pool))
	for _, r := range []loopResult{direct, via} {
		if err := check("bulk transfer", r); err != nil {
			return err
		}
	}
	mbps := func(r loopResult) float64 { return float64(r.ops) * size / (1 << 20) / r.seconds }
	add(row{Case: fmt.Sprintf("bulk CONNECT download, %d streams, direct", streams), Value: mbps(direct), Unit: "MB/s", Note: note(direct)})
	add(row{Case: fmt.Sprintf("bulk CONNECT download, %d streams, via gateway", streams), Value: mbps(via), Unit: "MB/s",
		Ratio: mbps(via) / mbps(direct), RatioOf: "direct", Note: note(via)})
	addTarget(rep, target{Name: "gateway bulk MB/s vs straight through the upstream", Measured: mbps(via) / mbps(direct), Needed: 0.8})

	// Requests/s: a sticky session against the upstream used directly, in
	// --rounds alternating rounds of both: the machine's speed drifts
	// between runs, and bursts of load from its other users fall on one
	// side of a single pair of runs. The target is the median of the
	// rounds' ratios; the rows count every round.
	const clients = 16
	dget := getter(b.direct(), clients)
	sget := getter(b.viaGateway("pool="+b.pool+",session=bench,sesstime=600"), clients)
	var directRPS, sessRPS loopResult
	var ratios []float64
	for round := range cfg.rounds {
		d := gwLoop(ctx, clients, cfg.duration, func(i int) error { return dget(i, okURL) })
		stopProfile := func() {}
		if round == 0 {
			if stopProfile, err = startProfile(cfg.gwprof); err != nil {
				return fmt.Errorf("--gateway-cpuprofile: %w", err)
			}
		}
		s := gwLoop(ctx, clients, cfg.duration, func(i int) error { return sget(i, okURL) })
		stopProfile()
		for _, r := range []loopResult{d, s} {
			if err := check("requests", r); err != nil {
				return err
			}
		}
		ratios = append(ratios, s.perSecond()/d.perSecond())
		directRPS, sessRPS = directRPS.add(d), sessRPS.add(s)
	}
	rounds := make([]string, len(ratios))
	for i, r := range ratios {
		rounds[i] = fmt.Sprintf("%.2f", r)
	}
	add(rateRow(fmt.Sprintf("HTTP GET, %d clients, direct", clients), "req/s", directRPS))
	sticky := ratioTo(rateRow(fmt.Sprintf("HTTP GET, %d clients, via gateway, sticky session", clients), "req/s", sessRPS), directRPS, "direct")
	sticky.Note = strings.TrimPrefix(sticky.Note+"; rounds "+strings.Join(rounds, ", ")+" (target: their median)", "; ")
	add(sticky)
	addTarget(rep, target{Name: "gateway req/s with a sticky session vs direct", Measured: median(ratios), Needed: 0.7})

	// Rotation: a lease per request, against the workers' own acquire+release pairs.
	consumer := "bench-pairs"
	pairs := gwLoop(ctx, clients, cfg.duration, func(int) error {
		lease, _, err := b.c.Acquire(ctx, model.AcquireRequest{PoolName: b.pool, ConsumerName: &consumer})
		if err != nil {
			return err
		}
		if lease == nil {
			return errors.New("no proxy free")
		}
		_, err = b.c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID})
		return err
	})
	rget := getter(b.viaGateway("pool="+b.pool), clients)
	rotRPS := gwLoop(ctx, clients, cfg.duration, func(i int) error { return rget(i, okURL) })
	for _, r := range []loopResult{pairs, rotRPS} {
		if err := check("rotation", r); err != nil {
			return err
		}
	}
	add(rateRow(fmt.Sprintf("acquire+release pairs, %d clients (no proxying)", clients), "pairs/s", pairs))
	add(ratioTo(rateRow(fmt.Sprintf("HTTP GET, %d clients, via gateway, a lease per request", clients), "req/s", rotRPS), pairs, "pairs"))
	// Everything shares the same cores here: a rotating request costs a
	// pair plus a proxied request. Were the gateway free, the two costs
	// would add up to this rate.
	bound := 1 / (1/pairs.perSecond() + 1/directRPS.perSecond())
	add(row{Case: "HTTP GET, a lease per request, vs pairs and direct requests' costs added", Value: rotRPS.perSecond(), Unit: "req/s",
		Ratio: rotRPS.perSecond() / bound, RatioOf: "sum of costs", Note: fmt.Sprintf("1/(1/pairs + 1/direct) = %.0f/s", bound)})
	addTarget(rep, target{Name: "gateway req/s rotating per request vs acquire+release pairs/s", Measured: rotRPS.perSecond() / pairs.perSecond(), Needed: 0.8})

	// Added latency, one client at a time.
	d1 := gwLoop(ctx, 1, cfg.duration, func(int) error { return dget(0, okURL) })
	s1 := gwLoop(ctx, 1, cfg.duration, func(int) error { return sget(0, okURL) })
	r1 := gwLoop(ctx, 1, cfg.duration, func(int) error { return rget(0, okURL) })
	for _, r := range []loopResult{d1, s1, r1} {
		if err := check("latency", r); err != nil {
			return err
		}
	}
	add(row{Case: "HTTP GET, 1 client, direct", Value: d1.perSecond(), Unit: "req/s", P50Ms: ms(pct(d1.lat, 0.5)), P99Ms: ms(pct(d1.lat, 0.99))})
	for _, c := range []struct {
		name string
		r    loopResult
	}{{"sticky session", s1}, {"a lease per request", r1}} {
		add(row{Case: "HTTP GET, 1 client, via gateway, " + c.name, Value: c.r.perSecond(), Unit: "req/s",
			P50Ms: ms(pct(c.r.lat, 0.5)), P99Ms: ms(pct(c.r.lat, 0.99)),
			Note: fmt.Sprintf("added latency p50 %.2f ms, p99 %.2f ms", ms(pct(c.r.lat, 0.5)-pct(d1.lat, 0.5)), ms(pct(c.r.lat, 0.99)-pct(d1.lat, 0.99)))})
	}
	rep.Seconds += time.Since(started).Seconds()
	return nil
}
