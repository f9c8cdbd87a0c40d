package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// handler hands each request to a bounded pool: NATS runs one callback at a
// time per subscription, so the subscription goroutine only waits for a
// free slot and never for the store. Once the broker stops, a request that
// still arrives (NATS delivered it before the drain took effect) is
// answered 503 at once, changing nothing, instead of waiting for a slot.
func (b *Broker) handler(ep endpoint, subject string) nats.MsgHandler {
	return func(msg *nats.Msg) {
		received := time.Now()
		if b.stopped() {
			b.refuseStopping(subject, msg, received)
			return
		}
		select {
		case b.sem <- struct{}{}:
		case <-b.stopping:
			b.refuseStopping(subject, msg, received)
			return
		}
		// Before this callback returns, so before Stop's drain ends and
		// its wait for wg begins.
		b.wg.Add(1)
		go func() {
			defer func() { <-b.sem; b.wg.Done() }()
			b.serve(ep, subject, msg, received)
		}()
	}
}

// stopped reports whether Stop has begun.
func (b *Broker) stopped() bool {
	select {
	case <-b.stopping:
		return true
	default:
		return false
	}
}

// refuseStopping answers a request that reached a stopping worker.
func (b *Broker) refuseStopping(subject string, msg *nats.Msg, received time.Time) {
	b.log.Debug("request refused: the worker is stopping", zap.String("subject", msg.Subject))
	b.respondError(subject, msg, received, 503, "unavailable", "this worker is stopping; nothing was changed: retry, another worker will answer")
}

// serve answers one request. Its statistics are recorded before the reply
// is sent, so that a client that has its reply finds it counted.
func (b *Broker) serve(ep endpoint, subject string, msg *nats.Msg, received time.Time) {
	ctx, cancel := b.opts.requestContext()
	defer cancel()
	reply, err := b.call(ctx, ep, msg)
	if err != nil {
		status, code, text := model.Reply(err)
		if status >= 500 {
			b.log.Warn("request failed", zap.String("subject", msg.Subject), zap.Int("status", status), zap.String("code", code), zap.Error(err), zap.Duration("took", time.Since(received)))
		} else {
			b.log.Debug("request refused", zap.String("subject", msg.Subject), zap.Int("status", status), zap.String("code", code), zap.String("message", text))
		}
		b.respondError(subject, msg, received, status, code, text)
		return
	}
	data, merr := json.Marshal(reply)
	if merr != nil {
		b.log.Error("reply not encodable", zap.String("subject", msg.Subject), zap.Error(merr))
		b.respondError(subject, msg, received, 500, "internal", "reply not encodable")
		return
	}
	b.svc.record(subject, time.Since(received), 0, "")
	if rerr := msg.Respond(data); rerr != nil {
		b.log.Warn("reply not sent", zap.String("subject", msg.Subject), zap.Error(rerr))
	}
}

// call decodes and runs the request; a panic is a 500, not a dead worker.
func (b *Broker) call(ctx context.Context, ep endpoint, msg *nats.Msg) (reply any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			b.log.Error("handler panicked", zap.String("subject", msg.Subject), zap.Any("panic", r), zap.Stack("stack"))
		}
	}()
	if len(msg.Data) > ep.limit {
		return nil, tooLarge(len(msg.Data), ep.limit)
	}
	return ep.call(ctx, msg.Data)
}

// respondError sends the micro error headers (Nats-Service-Error-Code,
// Nats-Service-Error) with the contract's error body, and counts the error.
func (b *Broker) respondError(subject string, msg *nats.Msg, received time.Time, status int, code, text string) {
	header := headerSafe(text)
	b.svc.record(subject, time.Since(received), status, header)
	out := &nats.Msg{Subject: msg.Reply, Header: errorHeader(status, header), Data: mustJSON(errorBody(code, text))}
	if err := msg.RespondMsg(out); err != nil {
		b.log.Warn("error reply not sent", zap.String("subject", msg.Subject), zap.Error(err))
	}
}

// slot lets a waiting acquire give its in-flight slot back while it sleeps,
// so a thousand waiters do not starve the requests that can be served now,
// and cuts its wait short when the broker stops (manager.Stopper).
type slot struct{ b *Broker }

func (s slot) Stopping() <-chan struct{} { return s.b.stopping }

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
