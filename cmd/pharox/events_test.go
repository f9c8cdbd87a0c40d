package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// syncBuffer is a bytes.Buffer safe to write and read from two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEventsReplay: --since reads what the stream kept, one readable line
// per event (time, event, pool, consumer, proxy, duration), or JSON.
func TestEventsReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	proxies := h.pool("ev", "http://127.0.0.1:3128")
	h.pool("other", "http://127.0.0.1:3129")
	acq := okJSON[model.AcquireReply](h, "acquire", "--pool", "ev", "--consumer", "bot")
	r := h.run("acquire", "--pool", "ev")
	require.Equal(t, exitNoProxy, r.code)
	h.ok("renew", acq.Lease.ID, "--duration", "30")
	h.ok("release", acq.Lease.ID)
	h.ok("acquire", "--pool", "other")
	require.NoError(t, h.w.Events.Flush(h.ctx()))

	out := h.ok("events", "--since", "1m", "--count", "4", "--pool", "ev")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 4, out)
	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`
	id := `[0-9a-f-]{36}`
	require.Regexp(t, `^`+ts+`  acquired        pool=ev  consumer=bot  proxy=`+proxies[0].ID+`  lease=`+acq.Lease.ID+`  took=[0-9.]+[µm]?s$`, lines[0])
	require.Regexp(t, `^`+ts+`  acquire_failed  pool=ev  consumer=default  proxy=-  took=[0-9.]+[µm]?s$`, lines[1])
	require.Regexp(t, `^`+ts+`  renewed         pool=ev  consumer=bot  proxy=`+id+`  lease=`+id+`  expires=`+ts+`$`, lines[2])
	require.Regexp(t, `^`+ts+`  released        pool=ev  consumer=bot  proxy=`+id+`  lease=`+acq.Lease.ID+`  held=[0-9.]+[µm]?s$`, lines[3])

	out = h.ok("events", "--since", time.Now().Add(-time.Minute).UTC().Format(time.RFC3339), "--count", "2", "--event", "released,acquired", "--json")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 2, out)
	var first, second eventJSON
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &second))
	require.Equal(t, model.EventAcquired, first.Event)
	require.Equal(t, "pharox.events.acquired", first.Subject)
	require.NotNil(t, first.StreamSeq)
	var payload model.AcquireEvent
	require.NoError(t, json.Unmarshal(first.Payload, &payload))
	require.Equal(t, acq.Lease.ID, payload.Lease.ID)
	require.Equal(t, model.EventReleased, second.Event)
}

// TestEventsLive tails live events until --count is reached.
func TestEventsLive(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pool("live", "http://127.0.0.1:3128")
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		done <- execute(ctx, []string{"events", "--count", "2"}, nil, &stdout, &stderr, func(k string) string { return h.env[k] })
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "listening") }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, stderr.String(), "pharox.events.* (live)")
	lease := okJSON[model.AcquireReply](h, "acquire", "--pool", "live")
	h.ok("release", lease.Lease.ID)
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("events did not stop after --count 2")
	}
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "  acquired  ")
	require.Contains(t, lines[1], "  released  ")
	require.Contains(t, lines[1], "lease="+lease.Lease.ID)

	// Without --count it stops when its context ends (Ctrl-C in main),
	// once it is listening.
	ctx2, cancel2 := context.WithCancel(context.Background())
	var stderr2 syncBuffer
	go func() {
		done <- execute(ctx2, []string{"events"}, nil, &stdout, &stderr2, func(k string) string { return h.env[k] })
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr2.String(), "listening") }, 10*time.Second, 10*time.Millisecond)
	cancel2()
	select {
	case code := <-done:
		require.Equal(t, 0, code)
	case <-time.After(5 * time.Second):
		t.Fatal("events did not stop when cancelled")
	}
}
