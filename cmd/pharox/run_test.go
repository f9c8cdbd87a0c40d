package main

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
)

// TestRunInProcess: the child sees the proxy variables, its status passes
// through, and the lease is released after it.
func TestRunInProcess(t *testing.T) {
	t.Parallel()
	_, printenv := binaries(t)
	h := newHarness(t)
	h.pool("run", "socks5://bot:s3cret@127.0.0.1:1080")

	r := h.run("run", "--pool", "run", "--consumer", "cron", "--", printenv, "-exit", "7")
	require.Equal(t, 7, r.code, r)
	env := envLines(r.stdout)
	url := "socks5://bot:s3cret@127.0.0.1:1080"
	for _, k := range proxyEnv {
		require.Equal(t, url, env[k], k)
	}
	require.Equal(t, url, env["PHAROX_PROXY_URL"])
	lease := h.lease(env["PHAROX_LEASE_ID"])
	require.Equal(t, model.LeaseReleased, lease.Status)
	require.Equal(t, "cron", lease.ConsumerName)
	require.Equal(t, env["PHAROX_PROXY_ID"], lease.ProxyID)
	require.Empty(t, r.stderr)

	// Status 0, -v, and the child's own flags after COMMAND without "--".
	r = h.run("run", "-v", "--pool", "run", printenv, "-exit", "0")
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stderr, "pharox: lease ")
	require.Contains(t, r.stderr, "socks5://bot:xxxxx@127.0.0.1:1080", "the password is masked")
	require.Contains(t, r.stderr, "exited with status 0")
	require.Equal(t, model.LeaseReleased, h.lease(envLines(r.stdout)["PHAROX_LEASE_ID"]).Status)

	// A command that does not exist: 127, and the lease is released.
	r = h.run("run", "--pool", "run", "--", "/nonexistent/command")
	require.Equal(t, 127, r.code, r)
	require.Contains(t, r.stderr, "/nonexistent/command")
	st, err := h.c.Stats(h.ctx(), "run")
	require.NoError(t, err)
	require.Equal(t, 0, st.TotalLeases)

	// No proxy free: 3, and the command does not run.
	l := okJSON[model.AcquireReply](h, "acquire", "--pool", "run")
	r = h.run("run", "--pool", "run", "--", printenv)
	require.Equal(t, exitNoProxy, r.code, r)
	require.NotContains(t, r.stdout, "ready")
	h.ok("release", l.Lease.ID)
}

// startBinary starts the built pharox with the harness's environment and
// returns it with a reader of its stdout.
func startBinary(t *testing.T, h *harness, args ...string) (*exec.Cmd, *bufio.Reader, *syncBuffer) {
	t.Helper()
	pharox, _ := binaries(t)
	cmd := exec.Command(pharox, args...)
	cmd.Env = append(cmd.Environ(), "PHAROX_NATS_URL="+h.url, "HTTP_PROXY=http://stale:1", "PHAROX_LEASE_ID=stale")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, bufio.NewReader(out), stderr
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "%v", err)
	return ee.ExitCode()
}

// TestRunBinary builds pharox and runs `pharox run` as a user would: the
// child's variables, its exit status, the release afterwards, renewal of a
// child that outlives its lease, and SIGTERM forwarding.
func TestRunBinary(t *testing.T) {
	t.Parallel()
	_, printenv := binaries(t)
	h := newHarness(t)
	h.pool("bin", "http://127.0.0.1:3128")

	t.Run("env and exit status", func(t *testing.T) {
		cmd, out, stderr := startBinary(t, h, "run", "--pool", "bin", "--", printenv, "-exit", "42")
		all, err := io.ReadAll(out)
		require.NoError(t, err)
		require.Equal(t, 42, exitCode(t, cmd.Wait()), stderr.String())
		env := envLines(string(all))
		for _, k := range proxyEnv {
			require.Equal(t, "http://127.0.0.1:3128", env[k], k)
		}
		require.NotEqual(t, "stale", env["PHAROX_LEASE_ID"], "replaced, not inherited")
		require.Equal(t, model.LeaseReleased, h.lease(env["PHAROX_LEASE_ID"]).Status)
	})

	t.Run("long child is renewed", func(t *testing.T) {
		start := time.Now()
		cmd, out, stderr := startBinary(t, h, "run", "--pool", "bin", "--duration", "2", "--", printenv, "-sleep", "2500ms")
		all, err := io.ReadAll(out)
		require.NoError(t, err)
		require.Equal(t, 0, exitCode(t, cmd.Wait()), stderr.String())
		require.GreaterOrEqual(t, time.Since(start), 2500*time.Millisecond)
		l := h.lease(envLines(string(all))["PHAROX_LEASE_ID"])
		// Released by pharox, not expired: it was renewed past its 2 s.
		require.Equal(t, model.LeaseReleased, l.Status, stderr.String())
		require.Greater(t, l.ReleasedAt.Sub(l.AcquiredAt), 2*time.Second)
		require.Greater(t, l.ExpiresAt.Sub(l.AcquiredAt), 2*time.Second, "expires_at moved by a renewal")
	})

	t.Run("SIGTERM is forwarded", func(t *testing.T) {
		cmd, out, stderr := startBinary(t, h, "run", "--pool", "bin", "--", printenv, "-trap", "-sleep", "20s")
		var env strings.Builder
		for {
			line, err := out.ReadString('\n')
			require.NoError(t, err, stderr.String())
			env.WriteString(line)
			if line == "ready\n" {
				break
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		rest, _ := io.ReadAll(out)
		require.Equal(t, "got terminated\n", string(rest))
		require.Equal(t, 100+int(syscall.SIGTERM), exitCode(t, cmd.Wait()), stderr.String())
		require.Equal(t, model.LeaseReleased, h.lease(envLines(env.String())["PHAROX_LEASE_ID"]).Status)
	})
}
