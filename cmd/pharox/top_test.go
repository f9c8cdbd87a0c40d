package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// topHarness is a worker with the pool "top": two proxies, both leased,
// and one more acquire that found nothing free. A failure reported on
// release cools a proxy down for 10 minutes.
func topHarness(t *testing.T) (*harness, []*model.Lease) {
	h := newHarness(t)
	h.pool("top", "http://127.0.0.1:3128", "http://127.0.0.1:3129")
	h.ok("pools", "update", "top", "--cooldown-failures", "1", "--cooldown-seconds", "600")
	var leases []*model.Lease
	for range 2 {
		l, _, err := h.c.Acquire(h.ctx(), model.AcquireRequest{PoolName: "top"})
		require.NoError(t, err)
		require.NotNil(t, l)
		leases = append(leases, l)
	}
	l, _, err := h.c.Acquire(h.ctx(), model.AcquireRequest{PoolName: "top"})
	require.NoError(t, err)
	require.Nil(t, l)
	// top counts acquires from the events stream; the worker publishes
	// them after it answers, so wait until the stream has them.
	require.NoError(t, h.w.Events.Flush(h.ctx()))
	return h, leases
}

// TestTopJSON: the one-shot snapshot has the pool's statistics (cooling
// proxies included) and the acquires of the window, counted from the
// events stream.
func TestTopJSON(t *testing.T) {
	h, leases := topHarness(t)
	h.pool("idle")
	snap := okJSON[TopSnapshot](h, "top", "--window", "1m")
	require.Len(t, snap.Pools, 2, "every pool, listed")
	p := snap.Pools[1]
	require.Equal(t, "top", p.PoolName)
	require.Equal(t, 2, p.TotalProxies)
	require.Equal(t, 0, p.AvailableProxies)
	require.Equal(t, 2, p.TotalLeases)
	require.Zero(t, p.CoolingProxies)
	require.Equal(t, 2, p.Acquired)
	require.Equal(t, 1, p.NoneFree)
	require.InDelta(t, 2.0/60, p.AcquiresPerSecond, 1e-9)
	require.InDelta(t, 1.0/60, p.NoneFreePerSecond, 1e-9)
	require.Equal(t, 60.0, p.WindowSeconds)
	require.Equal(t, "idle", snap.Pools[0].PoolName)
	require.Zero(t, snap.Pools[0].Acquired)

	// A failure cools its proxy down: counted as active, not available.
	_, err := h.c.Release(h.ctx(), model.ReleaseFailure(leases[0].ID, "connect timeout"))
	require.NoError(t, err)
	out := h.ok("top", "--pool", "top", "--json")
	require.Regexp(t, `"cooling_proxies": ?1\b`, out)
	one := okJSON[TopSnapshot](h, "top", "--pool", "top")
	require.Len(t, one.Pools, 1)
	require.Equal(t, 1, one.Pools[0].CoolingProxies)
	require.Equal(t, 2, one.Pools[0].ActiveProxies)
	require.Zero(t, one.Pools[0].AvailableProxies)
	require.Equal(t, 1, one.Pools[0].TotalLeases)
	r := h.run("top", "--pool", "nope", "--json")
	require.Equal(t, 1, r.code, r)
	require.Contains(t, r.stderr, "pool_not_found")
	r = h.run("top", "--interval", "1ms")
	require.Equal(t, 2, r.code, r)
}

// TestTopTerminal runs pharox top in a pseudo-terminal, as a person would:
// the pool's row shows its leases, follows a release and a failure that
// cools a proxy down, and q quits.
func TestTopTerminal(t *testing.T) {
	h, leases := topHarness(t)
	bin, _ := binaries(t)
	cmd := exec.Command(bin, "top", "--pool", "top", "--interval", "100ms")
	cmd.Env = []string{"PHAROX_NATS_URL=" + h.url, "TERM=xterm"}
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = tty.Close() })
	screen := newScreen(tty)

	screen.wait(t, regexp.MustCompile(`POOL +PROXIES +ACTIVE +AVAILABLE +LEASED +COOLING +LEASES +ACQUIRES/S +NONE FREE/S`))
	// POOL PROXIES ACTIVE AVAILABLE LEASED COOLING LEASES
	screen.wait(t, regexp.MustCompile(`top +2 +2 +0 +2 +0 +2 +0\.\d +0\.\d`))
	_, err = h.c.Release(h.ctx(), model.ReleaseRequest{LeaseID: leases[0].ID})
	require.NoError(t, err)
	screen.wait(t, regexp.MustCompile(`top +2 +2 +1 +1 +0 +1 `))
	// A failure cools the other proxy down: active, neither available nor
	// leased.
	_, err = h.c.Release(h.ctx(), model.ReleaseFailure(leases[1].ID, "connect timeout"))
	require.NoError(t, err)
	screen.wait(t, regexp.MustCompile(`top +2 +2 +1 +0 +1 +0 `))

	_, err = tty.Write([]byte("q"))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "q ends top with status 0")
	case <-time.After(10 * time.Second):
		t.Fatal("top did not quit on q")
	}
	screen.wait(t, regexp.MustCompile(regexp.QuoteMeta(ansiShowCursor)+`$`))
}

// screen collects what a program writes to its terminal.
type screen struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newScreen(tty interface{ Read([]byte) (int, error) }) *screen {
	s := &screen{changed: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := tty.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// wait waits until the last frame written (after the last clear-screen)
// matches re.
func (s *screen) wait(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		s.mu.Lock()
		out := s.buf.Bytes()
		if i := bytes.LastIndex(out, []byte(ansiClear)); i >= 0 {
			out = out[i:]
		}
		ok, frame, changed := re.Match(out), string(out), s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no frame matching %s; last:\n%q", re, frame)
		}
	}
}
