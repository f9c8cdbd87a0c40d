package worker

import (
	"errors"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// ErrorHandler logs the errors NATS reports asynchronously on a worker's
// connection: a slow consumer (messages dropped because a subscription fell
// behind: a KV watch, an event subscription) and permission or protocol
// errors. Start sets it on the worker's connection; the broker logs and
// counts the ones on its own endpoints itself and passes the rest on to it.
func ErrorHandler(log *zap.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		fields := []zap.Field{zap.Error(err)}
		if sub != nil {
			fields = append(fields, zap.String("subject", sub.Subject))
			if msgs, bytes, perr := sub.Pending(); perr == nil {
				fields = append(fields, zap.Int("pending_msgs", msgs), zap.Int("pending_bytes", bytes))
			}
			if dropped, derr := sub.Dropped(); derr == nil {
				fields = append(fields, zap.Int("dropped_total", dropped))
			}
		}
		if errors.Is(err, nats.ErrSlowConsumer) {
			log.Warn("slow consumer: NATS dropped messages of a subscription that fell behind", fields...)
			return
		}
		log.Warn("NATS reported an asynchronous error", fields...)
	}
}
