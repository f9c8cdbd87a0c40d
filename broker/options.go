package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
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
	// lineMsgs and lineBytes bound the requests waiting for one of the
	// maxInflight slots (-1: no bound); past them the broker answers 503.
	lineMsgs, lineBytes int
	// bulkSlots, bulkLine and bulkBytes are admin.proxies.add's own
	// intake: requests served at once, and the requests and bytes waiting.
	bulkSlots, bulkLine, bulkBytes int
	// intakeConn, if set, is the connection admin.proxies.add is taken on.
	intakeConn *nats.Conn
	// requestContext gives each request its context; Start sets it from
	// timeout unless a test did.
	requestContext func() (context.Context, context.CancelFunc)
}

// The intakes' defaults. A leasing request is small: a line of 4,096 is
// bounded in bytes by 32 MiB only for bodies near their 64 KiB limit.
// admin.proxies.add bodies are up to 1 MiB: two are served at once, and
// 8 MiB (8 full bodies) may wait, so a flood of them is read (and mostly
// answered 503) at the pace it arrives instead of piling up unread.
const (
	defaultLineMsgs  = 4096
	defaultLineBytes = 32 << 20
	defaultBulkSlots = 2
	defaultBulkLine  = 64
	defaultBulkBytes = 8 << 20
	bulkEndpoint     = "admin.proxies.add"
)

func defaultOptions() options {
	return options{prefix: "pharox", maxInflight: 256, timeout: 5 * time.Second, log: zap.NewNop(),
		lineMsgs: defaultLineMsgs, lineBytes: defaultLineBytes,
		bulkSlots: defaultBulkSlots, bulkLine: defaultBulkLine, bulkBytes: defaultBulkBytes}
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

// WithPendingLimits bounds the requests (msgs) and their bytes that the
// worker reads ahead and keeps waiting while every in-flight slot is busy
// (every endpoint but admin.proxies.add, which has its own intake); past
// them it answers 503 unavailable at once, changing nothing, rather than
// letting NATS drop requests unanswered. Default: 4,096 requests, 32 MiB;
// -1 lifts a bound.
func WithPendingLimits(msgs, bytes int) Option {
	return func(o *options) { o.lineMsgs, o.lineBytes = msgs, bytes }
}

// WithAddIntake sets admin.proxies.add's own intake: how many are served at
// once (default 2) and how many bytes of them may wait (default 8 MiB, at
// most 64 requests); past that it answers 503. A flood of large adds then
// waits in a line of its own, and leasing keeps its slots.
func WithAddIntake(concurrent, waitingBytes int) Option {
	return func(o *options) { o.bulkSlots, o.bulkBytes = concurrent, waitingBytes }
}

// WithIntakeConn takes admin.proxies.add requests on nc, a second
// connection to the same NATS deployment, instead of the broker's: up to
// 1 MiB each, a flood of them then queues on the server for that socket
// and never delays, or gets the server to drop as a slow consumer, the
// connection leasing is served on. The caller owns nc.
func WithIntakeConn(nc *nats.Conn) Option { return func(o *options) { o.intakeConn = nc } }

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
	if o.lineMsgs == 0 || o.lineMsgs < -1 || o.lineBytes == 0 || o.lineBytes < -1 {
		errs = append(errs, fmt.Errorf("WithPendingLimits must be positive or -1 (unlimited), got %d messages, %d bytes", o.lineMsgs, o.lineBytes))
	}
	if o.bulkSlots < 1 {
		errs = append(errs, fmt.Errorf("WithAddIntake must serve at least 1 request at once, got %d", o.bulkSlots))
	}
	if o.bulkBytes < MaxProxiesBody {
		// Less would refuse a full-size add even with nothing waiting.
		errs = append(errs, fmt.Errorf("WithAddIntake must let at least %d bytes wait (one full-size body), got %d", MaxProxiesBody, o.bulkBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}
