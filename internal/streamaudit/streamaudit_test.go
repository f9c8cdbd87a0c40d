package streamaudit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/natstest"
)

// The leader's reply is decoded whole (subject, data, headers, time), and
// a sequence the stream does not hold is ErrMsgNotFound, on a stream that
// allows direct gets as KV buckets do.
func TestLeaderGet(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"one", "two"} {
		m := nats.NewMsg("audit." + body)
		m.Data = []byte(body)
		m.Header.Set("X-Body", body)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	got, err := leaderGet(ctx, nc, "AUDIT", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 2 || got.Subject != "audit.two" || string(got.Data) != "two" || got.Header.Get("X-Body") != "two" || got.Time.IsZero() {
		t.Fatalf("sequence 2 read as %+v", got)
	}
	if _, err := leaderGet(ctx, nc, "AUDIT", 3); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("sequence 3: got %v, want ErrMsgNotFound", err)
	}
}
