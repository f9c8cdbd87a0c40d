package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

var eventNames = []string{model.EventAcquired, model.EventAcquireFailed, model.EventReleased, model.EventExpired, model.EventRenewed, model.EventHealth, model.EventCooldown}

func (a *app) eventsCmd() *cobra.Command {
	var since, pool string
	var names []string
	var count int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Tail lifecycle events, one line each",
		Long: `Print lifecycle events as they happen, one line each: time, event, pool,
consumer, proxy, lease and a duration (took: how long an acquire took;
held: how long a released or expired lease was held). --json prints one JSON
object per line instead: {"event", "subject", "time", "stream_seq", "payload"}
with the event's payload as the worker published it.

With --since it first replays what the PHAROX_EVENTS stream kept from then on
(a duration back from now, or an RFC 3339 time), then goes on live. Stops on
Ctrl-C, or after --count events.`,
		Example: `  pharox events
  pharox events --since 10m --event released,expired --pool scrapers
  pharox events --since 2026-01-02T15:00:00Z --json | jq .payload.pool_stats`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts []client.EventOption
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageErrorf("--since: %v", err)
				}
				opts = append(opts, client.WithReplaySince(t))
			}
			for _, n := range names {
				known := false
				for _, k := range eventNames {
					known = known || k == n
				}
				if !known {
					return usageErrorf("--event %q: events are %s", n, strings.Join(eventNames, ", "))
				}
			}
			if len(names) > 0 {
				opts = append(opts, client.WithEventNames(names...))
			}
			if count < 0 {
				return usageErrorf("--count must be >= 0, got %d", count)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ch := make(chan client.Event, 1024)
			quit := make(chan struct{})
			defer close(quit) // after sub.Stop below: a blocked handler lets go
			sub, err := c.SubscribeEvents(ctx, func(ev client.Event) {
				select {
				case ch <- ev:
				case <-ctx.Done():
				case <-quit:
				}
			}, opts...)
			if err != nil {
				return err
			}
			defer sub.Stop()
			what := "live"
			if since != "" {
				what = "from " + fmtTime(mustSince(since))
			}
			fmt.Fprintf(a.stderr, "pharox: listening to %s.events.* (%s); Ctrl-C stops\n", c.Prefix(), what)
			n := 0
			for count == 0 || n < count {
				select {
				case <-ctx.Done():
					return nil
				case ev := <-ch:
					if pool != "" && ev.PoolName() != pool {
						continue
					}
					if err := a.printEvent(ev); err != nil {
						return err
					}
					n++
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&since, "since", "", "replay from this long ago (10m, 2h) or this RFC 3339 time, then go on live")
	fs.StringVarP(&pool, "pool", "p", "", "only events of this pool")
	fs.StringSliceVar(&names, "event", nil, "only these events: "+strings.Join(eventNames, ", "))
	fs.IntVarP(&count, "count", "n", 0, "stop after this many events (0: never)")
	return cmd
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("a duration back from now must not be negative, got %s", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a duration (10m) or an RFC 3339 time, got %q", s)
}

func mustSince(s string) time.Time {
	t, _ := parseSince(s, time.Now())
	return t
}

// eventJSON is the --json line of an event.
type eventJSON struct {
	Event     string          `json:"event"`
	Subject   string          `json:"subject"`
	Time      time.Time       `json:"time"`
	StreamSeq *uint64         `json:"stream_seq"`
	Payload   json.RawMessage `json:"payload"`
}

func (a *app) printEvent(ev client.Event) error {
	if a.jsonOut {
		line := eventJSON{Event: ev.Name, Subject: ev.Subject, Time: ev.Time, Payload: ev.Data}
		if ev.Sequence > 0 {
			line.StreamSeq = &ev.Sequence
		}
		if !json.Valid(ev.Data) {
			line.Payload = json.RawMessage("null")
		}
		data, err := json.Marshal(line)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", data)
		return err
	}
	_, err := fmt.Fprintln(a.stdout, eventLine(ev))
	return err
}

// eventLine is the human line: time, event, then key=value fields.
func eventLine(ev client.Event) string {
	fields := []string{fmtTime(ev.Time), fmt.Sprintf("%-14s", ev.Name)}
	add := func(k, v string) {
		if v == "" {
			v = "-"
		}
		fields = append(fields, k+"="+v)
	}
	leaseFields := func(l *model.Lease, consumer string) {
		if l != nil {
			consumer = l.ConsumerName
		}
		add("consumer", consumer)
		if l != nil {
			add("proxy", l.ProxyID)
			add("lease", l.ID)
		} else {
			add("proxy", "")
		}
	}
	switch {
	case ev.Acquire != nil:
		add("pool", ev.Acquire.PoolName)
		leaseFields(ev.Acquire.Lease, ev.Acquire.ConsumerName)
		add("took", fmtMs(ev.Acquire.DurationMs))
	case ev.Release != nil:
		add("pool", ev.Release.PoolName)
		leaseFields(ev.Release.Lease, "")
		add("held", fmtMs(ev.Release.LeaseDurationMs))
		if o := ev.Release.Outcome; o != nil {
			add("outcome", string(*o))
		}
	case ev.Expired != nil:
		add("pool", ev.Expired.PoolName)
		leaseFields(ev.Expired.Lease, "")
		if l := ev.Expired.Lease; l != nil {
			add("held", l.ExpiresAt.Sub(l.AcquiredAt).Round(time.Millisecond).String())
		}
	case ev.Renewed != nil:
		add("pool", ev.Renewed.PoolName)
		leaseFields(ev.Renewed.Lease, "")
		if l := ev.Renewed.Lease; l != nil {
			add("expires", fmtTime(l.ExpiresAt))
		}
	case ev.Health != nil:
		add("pool", ev.Health.PoolName)
		add("proxy", ev.Health.ProxyID)
		add("status", fmt.Sprintf("%s->%s", ev.Health.PreviousStatus, ev.Health.Result.Status))
		add("latency", fmtMs(ev.Health.Result.LatencyMs))
	case ev.Cooldown != nil:
		add("pool", ev.Cooldown.PoolName)
		add("proxy", ev.Cooldown.ProxyID)
		add("failures", strconv.Itoa(ev.Cooldown.ConsecutiveFailures))
		add("until", fmtTime(ev.Cooldown.CooldownUntil))
		if r := ev.Cooldown.Reason; r != nil {
			add("reason", strconv.Quote(*r))
		}
	default:
		add("subject", ev.Subject)
		if ev.DecodeErr != nil {
			add("error", fmt.Sprintf("%q", ev.DecodeErr.Error()))
		}
	}
	return strings.Join(fields, "  ")
}
