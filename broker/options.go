package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

type options struct {
	prefix      string
	maxInflight int
	timeout     time.Duration
	log         *zap.Logger
	health      HealthChecker
	observer    Observer     // WithObserver (observe.go)
	tracer      trace.Tracer // WithTracerProvider (observe.go)
	// pendingMsgs and pendingBytes bound what NATS queues for one endpoint
	// before it drops requests as a slow consumer (0: the client's defaults).
	pendingMsgs, pendingBytes int
	// requestContext gives each request its context; Start sets it from
	// timeout unless a test did.
	requestContext func() (context.Context, context.CancelFunc)
}

func defaultOptions() options {
	return options{prefix: "pharox", maxInflight: 256, timeout: 5 * time.Second, log: zap.NewNop()}
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

// WithPendingLimits bounds the requests (msgs) and bytes NATS queues for one
// endpoint while every in-flight slot is busy; past them it drops requests
// (a slow consumer: logged, and counted in $SRV.STATS as errors of that
// endpoint). Without it the NATS client's defaults apply (512k messages,
// 64 MiB); -1 lifts a bound.
func WithPendingLimits(msgs, bytes int) Option {
	return func(o *options) { o.pendingMsgs, o.pendingBytes = msgs, bytes }
}

// validate refuses values that cannot work, naming the option.
func (o *options) validate() error {
	var errs []error
	if err := model.CheckPrefix(o.prefix); err != nil {
		errs = append(errs, fmt.Errorf("WithPrefix: %w", err))
	}
	if o.maxInflight < 1 {
		// A zero-slot pool would make every request wait forever.
		errs = append(errs, fmt.Errorf("WithMaxInflight must be at least 1, got %d", o.maxInflight))
	}
	if o.timeout <= 0 && o.requestContext == nil {
		// A deadline that has always passed answers every request 503.
		errs = append(errs, fmt.Errorf("WithRequestTimeout must be positive, got %s", o.timeout))
	}
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	if o.pendingMsgs < -1 || o.pendingBytes < -1 || (o.pendingMsgs == 0) != (o.pendingBytes == 0) {
		errs = append(errs, fmt.Errorf("WithPendingLimits must be positive or -1 (unlimited), got %d messages, %d bytes", o.pendingMsgs, o.pendingBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}
