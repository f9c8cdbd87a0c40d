// Package broker serves the pharox contract as a NATS micro service: it
// decodes and validates requests, calls the manager, maps errors to the
// contract's codes in one place and encodes replies.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/manager"
)

// Version is the service version shown by $SRV.INFO: 1.1.0 since the
// workers implement the contract's v1.1 additions.
const Version = "1.1.0"

// Body limits of the contract.
const (
	MaxBody        = 64 << 10
	MaxProxiesBody = 1 << 20
)

// Broker is one worker's micro service.
type Broker struct {
	svc  micro.Service
	m    *manager.Manager
	opts options
	log  *zap.Logger
	sem  chan struct{}
	wg   sync.WaitGroup
}

type options struct {
	prefix      string
	maxInflight int
	timeout     time.Duration
	log         *zap.Logger
	health      HealthChecker
}

// Option configures Start.
type Option func(*options)

// WithPrefix sets the subject prefix (default "pharox").
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithMaxInflight bounds the requests handled at once (default 256).
func WithMaxInflight(n int) Option { return func(o *options) { o.maxInflight = n } }

// WithRequestTimeout sets each request's deadline (default 5 s).
func WithRequestTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// Start registers the service and its endpoints on nc.
func Start(nc *nats.Conn, m *manager.Manager, opts ...Option) (*Broker, error) {
	o := options{prefix: "pharox", maxInflight: 256, timeout: 5 * time.Second, log: zap.NewNop()}
	for _, opt := range opts {
		opt(&o)
	}
	b := &Broker{m: m, opts: o, log: o.log, sem: make(chan struct{}, o.maxInflight)}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "pharox",
		Version:     Version,
		Description: "pharox proxy leasing: acquire, release and administer proxy pools",
		Metadata:    map[string]string{"subject_prefix": o.prefix},
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service: %w", err)
	}
	b.svc = svc
	group := svc.AddGroup(o.prefix)
	for _, ep := range b.endpoints() {
		name := endpointName(ep.subject)
		if err := group.AddEndpoint(name, b.handler(ep), micro.WithEndpointSubject(ep.subject),
			micro.WithEndpointMetadata(map[string]string{"request_schema": ep.schema + ".request", "max_body_bytes": fmt.Sprint(ep.limit)})); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s: %w", ep.subject, err)
		}
	}
	return b, nil
}

// Subjects lists every subject served.
func (b *Broker) Subjects() []string {
	var out []string
	for _, ep := range b.endpoints() {
		out = append(out, b.opts.prefix+"."+ep.subject)
	}
	return out
}

// Info returns the micro service's info.
func (b *Broker) Info() micro.Info { return b.svc.Info() }

// Stop stops taking requests (draining the endpoints' subscriptions) and
// waits, until ctx ends, for the requests in flight to be answered.
func (b *Broker) Stop(ctx context.Context) error {
	err := b.svc.Stop()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("requests still in flight: %w", ctx.Err()))
	}
	return err
}

// endpoint is one operation of the contract.
type endpoint struct {
	subject string
	schema  string
	limit   int
	call    func(ctx context.Context, body []byte) (any, error)
}

// handler hands each request to a bounded pool: micro runs one handler call
// at a time per endpoint, so the subscription goroutine only waits for a
// free slot and never for the store.
func (b *Broker) handler(ep endpoint) micro.HandlerFunc {
	return func(req micro.Request) {
		b.sem <- struct{}{}
		b.wg.Add(1)
		go func() {
			defer func() { <-b.sem; b.wg.Done() }()
			b.serve(ep, req)
		}()
	}
}

func (b *Broker) serve(ep endpoint, req micro.Request) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.timeout)
	defer cancel()
	var reply any
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
				b.log.Error("handler panicked", zap.String("subject", req.Subject()), zap.Any("panic", r), zap.Stack("stack"))
			}
		}()
		body := req.Data()
		if len(body) > ep.limit {
			err = tooLarge(len(body), ep.limit)
			return
		}
		reply, err = ep.call(ctx, body)
	}()
	if err != nil {
		status, code, msg := mapError(err)
		if status >= 500 {
			b.log.Warn("request failed", zap.String("subject", req.Subject()), zap.Int("status", status), zap.String("code", code), zap.Error(err), zap.Duration("took", time.Since(start)))
		} else {
			b.log.Debug("request refused", zap.String("subject", req.Subject()), zap.Int("status", status), zap.String("code", code), zap.String("message", msg))
		}
		body, _ := json.Marshal(errorBody(code, msg))
		if rerr := respondError(req, fmt.Sprint(status), headerSafe(msg), body); rerr != nil {
			b.log.Warn("error reply not sent", zap.String("subject", req.Subject()), zap.Error(rerr))
		}
		return
	}
	data, merr := json.Marshal(reply)
	if merr != nil {
		b.log.Error("reply not encodable", zap.String("subject", req.Subject()), zap.Error(merr))
		_ = respondError(req, "500", "reply not encodable", mustJSON(errorBody("internal", "reply not encodable")))
		return
	}
	if rerr := req.Respond(data); rerr != nil {
		b.log.Warn("reply not sent", zap.String("subject", req.Subject()), zap.Error(rerr))
	}
}

// slot lets a waiting acquire give its in-flight slot back while it sleeps,
// so a thousand waiters do not starve the requests that can be served now.
type slot struct{ b *Broker }

func (s slot) Park() { <-s.b.sem }

func (s slot) Unpark(ctx context.Context) error {
	select {
	case s.b.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		// Take the slot anyway so the handler's release stays balanced;
		// the request is answered at once.
		s.b.sem <- struct{}{}
		return ctx.Err()
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
