package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readyTimeout bounds one readiness check (JetStream round trips and the
// replica catching up).
const readyTimeout = 3 * time.Second

// Ready reports why the worker should not get work now, or nil: it is
// draining; it has not finished starting (its replica is not loaded); its
// NATS connection is down; one of its buckets' streams or the events
// stream cannot be reached; its replica does not catch up with the writes
// the buckets acknowledged within the check's time.
func (mon *Monitor) Ready(ctx context.Context) error {
	if mon.draining.Load() {
		return errors.New("draining: the worker is stopping")
	}
	p := mon.parts.Load()
	if p == nil {
		return errors.New("starting: the replica is not loaded yet")
	}
	if st := p.Conn.Status(); st != nats.CONNECTED {
		return fmt.Errorf("NATS connection is %s", st)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	js, err := jetstream.New(p.Conn)
	if err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	var errs []error
	for _, name := range p.Streams {
		if _, err := js.Stream(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("stream %s not reachable: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := p.Manager.CaughtUp(ctx); err != nil {
		return fmt.Errorf("replica not caught up: %w", err)
	}
	return nil
}
