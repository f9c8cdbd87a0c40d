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

// handler hands each request to its intake (see intake): NATS runs one
// callback at a time per subscription, so the callback only offers the
// request and returns, never waiting for a slot or the store. A request
// over the intake's line, or one that arrives once the broker is stopping
// (NATS delivered it before the drain took effect), is answered 503 at
// once and changes nothing.
func (b *Broker) handler(ep endpoint, subject string, in *intake) nats.MsgHandler {
	return func(msg *nats.Msg) {
		received := time.Now()
		// Before this callback returns, so before Stop's drain ends and
		// its wait for wg begins.
		b.wg.Add(1)
		in.offer(job{
			size: len(msg.Data),
			run: func() {
				defer b.wg.Done()
				b.serve(ep, subject, msg, received)
			},
			refuse: func(why string) {
				defer b.wg.Done()
				text := "this worker is stopping; nothing was changed: retry, another worker will answer"
				if why == "full" {
					text = fmt.Sprintf("this worker has too many %s requests waiting; nothing was changed: retry", in.name)
				}
				b.refuse(subject, msg, received, text)
			},
		})
	}
}

// refuse answers 503 without serving the request.
func (b *Broker) refuse(subject string, msg *nats.Msg, received time.Time, text string) {
	b.log.Debug("request refused", zap.String("subject", msg.Subject), zap.String("why", text))
	_, obs := b.observe(context.Background(), subject, msg, received)
	b.respondError(obs, subject, msg, received, 503, "unavailable", text)
}

// serve answers one request. Its statistics are recorded before the reply
// is sent, so that a client that has its reply finds it counted.
func (b *Broker) serve(ep endpoint, subject string, msg *nats.Msg, received time.Time) {
	ctx, cancel := b.opts.requestContext()
	defer cancel()
	ctx, obs := b.observe(ctx, subject, msg, received)
	reply, err := b.call(ctx, ep, msg)
	if err != nil {
		status, code, text := model.Reply(err)
		if status >= 500 {
			b.log.Warn("request failed", zap.String("subject", msg.Subject), zap.Int("status", status), zap.String("code", code), zap.Error(err), zap.Duration("took", time.Since(received)))
		} else {
			b.log.Debug("request refused", zap.String("subject", msg.Subject), zap.Int("status", status), zap.String("code", code), zap.String("message", text))
		}
		b.respondError(obs, subject, msg, received, status, code, text)
		return
	}
	data, merr := json.Marshal(reply)
	if merr != nil {
		b.log.Error("reply not encodable", zap.String("subject", msg.Subject), zap.Error(merr))
		b.respondError(obs, subject, msg, received, 500, "internal", "reply not encodable")
		return
	}
	took := time.Since(received)
	b.svc.record(subject, took, 0, "")
	obs.done(took, 0, "ok")
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
func (b *Broker) respondError(obs observation, subject string, msg *nats.Msg, received time.Time, status int, code, text string) {
	header := headerSafe(text)
	took := time.Since(received)
	b.svc.record(subject, took, status, header)
	obs.done(took, status, code)
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

func (s slot) Park() { s.b.lease.release() }

// Unpark takes a slot again; when ctx ends first it takes one anyway, so
// that the serving goroutine's release stays balanced, and the request is
// answered at once.
func (s slot) Unpark(ctx context.Context) error { return s.b.lease.unpark(ctx) }

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
