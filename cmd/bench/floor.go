package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// floorPairs measures the server operations the contract itself asks of an
// acquire+release pair, with no pharox code at all: two request-replies to
// a responder, one revision-checked KV update per request (guarantee 2 and
// 3) that carries the event it owes in its headers (guarantee 4 across a
// crash: see README, "Events that survive the worker"), the ended lease's
// record (guarantee 7: leases.get after release), and two events in a
// deduplicating stream with a Nats-Msg-Id derived from the commit's
// sequence (guarantee 4). The responder keeps revisions in memory, as a
// replica would, and each client has its own key, so nothing conflicts.
// Payloads are the size of the real records and events. No implementation
// of the contract on this substrate can go faster; the ratio of our pairs/s
// to this one is how much of that limit we reach.
//
// With owed false the writes carry no events in their headers: the floor as
// it was before events had to survive a crash, to show what that costs.
func floorPairs(ctx context.Context, url string, meter func() cpuUse, conc int, d time.Duration, owed bool) (float64, cpuUse, error) {
	wnc, err := nats.Connect(url)
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer wnc.Close()
	cnc, err := nats.Connect(url)
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer cnc.Close()
	js, err := jetstream.New(wnc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return 0, cpuUse{}, err
	}
	tag := strconv.FormatInt(time.Now().UnixNano(), 36)
	state, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "BENCH_FLOOR_STATE_" + tag, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), state.Bucket()) }()
	ended, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "BENCH_FLOOR_ENDED_" + tag, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), ended.Bucket()) }()
	evSubj := "benchfloor" + tag + ".events"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_FLOOR_EVENTS_" + tag, Subjects: []string{evSubj + ".>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		return 0, cpuUse{}, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_FLOOR_EVENTS_"+tag) }()

	record := bytes.Repeat([]byte("r"), 560) // a proxy record with one holder
	event := bytes.Repeat([]byte("e"), 900)  // an acquired/released event
	lease := bytes.Repeat([]byte("l"), 420)  // an ended lease record
	revs := make([]atomic.Uint64, conc)
	for i := range revs {
		rev, err := state.Create(ctx, "k"+strconv.Itoa(i), record)
		if err != nil {
			return 0, cpuUse{}, err
		}
		revs[i].Store(rev)
	}
	publishEvent := func(name string, rev uint64) {
		msg := &nats.Msg{Subject: evSubj + "." + name, Data: event, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, "KV_"+state.Bucket()+":"+strconv.FormatUint(rev, 10)+":0")
		_, _ = js.PublishMsgAsync(msg)
	}
	header := string(event) // the event, carried in the write's headers
	serve := func(release bool) nats.MsgHandler {
		return func(m *nats.Msg) {
			go func() {
				i, _ := strconv.Atoi(string(m.Data))
				key := "k" + strconv.Itoa(i)
				msg := &nats.Msg{Subject: "$KV." + state.Bucket() + "." + key, Data: record, Header: nats.Header{}}
				if owed {
					msg.Header.Set("Pharox-Outbox", header)
				}
				ack, err := js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(revs[i].Load()))
				if err != nil {
					_ = m.Respond([]byte("error"))
					return
				}
				revs[i].Store(ack.Sequence)
				if release {
					_, _ = ended.Put(ctx, uuid.NewString(), lease)
					publishEvent("released", ack.Sequence)
				} else {
					publishEvent("acquired", ack.Sequence)
				}
				_ = m.Respond(record)
			}()
		}
	}
	for subj, release := range map[string]bool{"acquire": false, "release": true} {
		sub, err := wnc.QueueSubscribe("benchfloor"+tag+"."+subj, "q", serve(release))
		if err != nil {
			return 0, cpuUse{}, err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if err := wnc.Flush(); err != nil {
		return 0, cpuUse{}, err
	}

	before := meter()
	subjects := []string{"benchfloor" + tag + ".acquire", "benchfloor" + tag + ".release"}
	pairs, err := closedLoop(conc, d, func(i int) error {
		body := []byte(strconv.Itoa(i))
		for _, subj := range subjects {
			msg, err := cnc.Request(subj, body, 10*time.Second)
			if err != nil {
				return err
			}
			if string(msg.Data) == "error" {
				return fmt.Errorf("floor responder failed a CAS")
			}
		}
		return nil
	})
	used := meter().sub(before)
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Second):
	}
	return float64(pairs) / d.Seconds(), used, err
}
