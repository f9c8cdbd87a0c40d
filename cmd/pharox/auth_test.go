package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/authtest"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/natsconn"
)

var (
	workerOnce sync.Once
	workerErr  error
)

// workerBinary builds ./cmd/worker once per test run.
func workerBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(binDir, "worker")
	workerOnce.Do(func() {
		if b, err := exec.Command("go", "build", "-o", out, "../worker").CombinedOutput(); err != nil {
			workerErr = fmt.Errorf("go build ../worker: %v\n%s", err, b)
		}
	})
	require.NoError(t, workerErr)
	return out
}

// workerProc is a worker process; its stderr (the JSON log) is kept.
type workerProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer
	done   chan struct{}
	waited error
}

func (w *workerProc) Log() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}

// startWorker starts the worker binary and waits until it logs that it
// serves; it is stopped (SIGTERM) with the test or by stop.
func startWorker(t *testing.T, env map[string]string, args ...string) *workerProc {
	t.Helper()
	w := launchWorker(t, env, args...)
	serving := make(chan struct{})
	go func() {
		for !strings.Contains(w.Log(), `"msg":"pharox worker serving"`) {
			select {
			case <-w.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		close(serving)
	}()
	select {
	case <-serving:
	case <-w.done:
		t.Fatalf("worker exited: %v\n%s", w.waited, w.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("worker not serving after 30s\n%s", w.Log())
	}
	t.Cleanup(func() { w.stop(t) })
	return w
}

func launchWorker(t *testing.T, env map[string]string, args ...string) *workerProc {
	t.Helper()
	cmd := exec.Command(workerBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	w := &workerProc{cmd: cmd, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	cmd.Stdout = io.Discard
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			w.mu.Lock()
			w.log.Write(sc.Bytes())
			w.log.WriteByte('\n')
			w.mu.Unlock()
		}
		w.waited = cmd.Wait()
		close(w.done)
	}()
	return w
}

// stop ends the worker with SIGTERM and waits for its last log line.
func (w *workerProc) stop(t *testing.T) {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if !w.exited(20 * time.Second) {
		t.Errorf("worker did not stop on SIGTERM\n%s", w.Log())
	}
}

// exited waits up to d for the worker to exit; past d it kills the worker,
// waits for that, and reports false.
func (w *workerProc) exited(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		_ = w.cmd.Process.Kill()
		<-w.done
		return false
	}
}

// failWorker runs the worker binary expecting it to exit, and returns its
// exit code and log.
func failWorker(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	w := launchWorker(t, env, args...)
	if !w.exited(30 * time.Second) {
		t.Fatalf("worker did not exit\n%s", w.Log())
	}
	return w.cmd.ProcessState.ExitCode(), w.Log()
}

// cli runs the pharox command line in-process with exactly env.
func cli(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return (&harness{t: t, env: env}).run(args...)
}

func withEnv(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestAuthMethods joins the worker binary and runs the CLI with each login
// method against a server that requires it, and checks that a wrong
// credential stops both with a message that says what was refused.
func TestAuthMethods(t *testing.T) {
	t.Parallel()
	workerBinary(t)
	dir := t.TempDir()
	seed, pub := authtest.NKeyUser(t)
	wrongSeed, _ := authtest.NKeyUser(t)
	pki := authtest.NewPKI(t)
	op := authtest.NewOperator(t)

	// One server per case that logs in to it: the cases run in parallel,
	// and a worker of one case that is stopping answers 503 "stopping" to
	// a request of another case that reached it first on a shared server.
	userServer := func() *server.Server {
		return authtest.RunServer(t, &server.Options{JetStream: true,
			Users: []*server.User{{Username: "pharox", Password: "user-pw-1"}}, Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	}
	userSrv, userFileSrv, nkeySrv := userServer(), userServer(), userServer()
	tokenSrv := authtest.RunServer(t, &server.Options{JetStream: true, Authorization: "token-2x"})
	jwtOpts := &server.Options{JetStream: true}
	op.Apply(t, jwtOpts)
	jwtSrv := authtest.RunServer(t, jwtOpts)
	tlsSrv := authtest.RunServer(t, &server.Options{JetStream: true, TLS: true, TLSVerify: true, TLSConfig: pki.ServerTLS(t, true), TLSTimeout: 5})
	pwFile := authtest.WriteFile(t, dir, "pw", "user-pw-1\n")

	for _, tc := range []struct {
		name        string
		srv         *server.Server
		env         map[string]string // worker and CLI alike
		wrong       map[string]string
		workerWants string
		cliWants    string
	}{
		{"user and password", userSrv,
			map[string]string{"PHAROX_NATS_USER": "pharox", natsconn.EnvPassword: "user-pw-1"},
			map[string]string{"PHAROX_NATS_USER": "pharox", natsconn.EnvPassword: "not-the-pw"},
			`refused the login (Authorization Violation) as user \"pharox\" (password from PHAROX_NATS_PASSWORD)`,
			`refused the login (Authorization Violation) as user "pharox" (password from PHAROX_NATS_PASSWORD): check the user name (--nats-user) and its password`},
		{"user and password file", userFileSrv,
			map[string]string{"PHAROX_NATS_USER": "pharox", "PHAROX_NATS_PASSWORD_FILE": pwFile},
			map[string]string{"PHAROX_NATS_USER": "mallory", "PHAROX_NATS_PASSWORD_FILE": pwFile},
			`Authorization Violation`, `as user "mallory"`},
		{"token", tokenSrv,
			map[string]string{natsconn.EnvToken: "token-2x"},
			map[string]string{natsconn.EnvToken: "not-the-token"},
			`refused the login (Authorization Violation) as token (from PHAROX_NATS_TOKEN)`,
			`check the token (PHAROX_NATS_TOKEN or --nats-token-file)`},
		{"nkey", nkeySrv,
			map[string]string{"PHAROX_NATS_NKEY": seed},
			map[string]string{"PHAROX_NATS_NKEY": wrongSeed},
			`Authorization Violation`, `the server knows no user with nkey`},
		{"creds", jwtSrv,
			map[string]string{"PHAROX_NATS_CREDS": op.CredsFile},
			map[string]string{"PHAROX_NATS_CREDS": op.ForeignCreds},
			`Authorization Violation`, `not signed by an account the server trusts`},
		{"mutual TLS", tlsSrv,
			map[string]string{"PHAROX_NATS_TLS_CA": pki.CAFile, "PHAROX_NATS_TLS_CERT": pki.ClientCert, "PHAROX_NATS_TLS_KEY": pki.ClientKey},
			map[string]string{"PHAROX_NATS_TLS_CA": pki.CAFile},
			`requires a client certificate`, `requires a client certificate signed by a CA it trusts: give --nats-tls-cert and --nats-tls-key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.srv.ClientURL()
			if tc.srv == tlsSrv {
				url = strings.Replace(url, "nats://", "tls://", 1)
			}
			env := withEnv(tc.env, "PHAROX_NATS_URL", url)
			startWorker(t, env)
			pool := strings.ReplaceAll(tc.name, " ", "-")
			r := cli(t, env, "pools", "create", pool)
			require.Equal(t, 0, r.code, r)
			r = cli(t, env, "pools", "list")
			require.Equal(t, 0, r.code, r)
			require.Contains(t, r.stdout, pool)

			wrong := withEnv(tc.wrong, "PHAROX_NATS_URL", url)
			code, log := failWorker(t, wrong)
			require.Equal(t, 1, code, log)
			require.Contains(t, log, tc.workerWants)
			r = cli(t, wrong, "pools", "list")
			require.Equal(t, exitError, r.code, r)
			require.Contains(t, r.stderr, tc.cliWants)
			for _, secret := range []string{"not-the-", "user-pw-1", "token-2x"} {
				require.NotContains(t, log+r.stderr, secret)
			}
		})
	}

	t.Run("refused at start", func(t *testing.T) {
		t.Parallel()
		port := strconv.Itoa(natstest.FreePort(t))
		code, log := failWorker(t, nil, "--listen", "0.0.0.0:"+port, "--data-dir", t.TempDir())
		require.Equal(t, 1, code, log)
		require.Contains(t, log, "refusing to listen on 0.0.0.0:"+port)
		code, log = failWorker(t, map[string]string{"PHAROX_NATS_CREDS": op.CredsFile}, "--data-dir", t.TempDir())
		require.Equal(t, 2, code, log)
		require.Contains(t, log, "worker: --nats-creds")
		require.Contains(t, log, "the embedded server has no users to log in as")
		r := cli(t, map[string]string{natsconn.EnvToken: "t", "PHAROX_NATS_USER": "u", natsconn.EnvPassword: "p"}, "pools", "list")
		require.Equal(t, exitUsage, r.code, r)
		require.Contains(t, r.stderr, "choose one way to log in to NATS")
	})
}

// TestSecretsNeverLogged runs the worker at debug level and the CLI
// through a sequence of operations, logged in with passwords and a token,
// and checks that no NATS secret appears in any log, any output or any
// event, that the proxy's password appears in no log and no event, and
// (in the first set-up, whose worker encrypts proxy credentials) that the
// credentials key appears nowhere either.
func TestSecretsNeverLogged(t *testing.T) {
	workerBinary(t)
	const proxyPassword = "proxy-pw-Zr5"
	credentialsKey, err := credkey.Generate()
	require.NoError(t, err)
	var outputs []string // every CLI stdout and stderr
	cliOK := func(env map[string]string, args ...string) string {
		t.Helper()
		r := cli(t, env, args...)
		require.Equal(t, 0, r.code, "pharox %s\n%s", strings.Join(args, " "), r)
		outputs = append(outputs, r.stdout, r.stderr)
		return r.stdout
	}
	// events reads every event PHAROX_EVENTS holds.
	events := func(env map[string]string) []string {
		t.Helper()
		s, err := natsconnConfig(env).Resolve()
		require.NoError(t, err)
		nc, err := s.Connect()
		require.NoError(t, err)
		defer nc.Close()
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		st, err := js.Stream(t.Context(), "PHAROX_EVENTS")
		require.NoError(t, err)
		last := st.CachedInfo().State.LastSeq
		require.Positive(t, last)
		cons, err := js.OrderedConsumer(t.Context(), "PHAROX_EVENTS", jetstream.OrderedConsumerConfig{})
		require.NoError(t, err)
		var out []string
		for {
			m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			require.NoError(t, err)
			out = append(out, string(m.Data()))
			md, err := m.Metadata()
			require.NoError(t, err)
			if md.Sequence.Stream == last {
				return out
			}
		}
	}
	// The same operations in both set-ups.
	operate := func(admin, leaser map[string]string) {
		cliOK(admin, "pools", "create", "secret-pool")
		cliOK(admin, "proxies", "add", "--pool", "secret-pool", "socks5://bot:"+proxyPassword+"@127.0.0.1:1080", "--country", "AR")
		cliOK(admin, "proxies", "list", "--pool", "secret-pool")
		proxyID := strings.TrimSpace(cliOK(admin, "proxies", "list", "--pool", "secret-pool", "--quiet"))
		cliOK(admin, "proxies", "get", proxyID)
		cliOK(admin, "consumers", "ensure", "crawler-1")
		var acq model.AcquireReply
		require.NoError(t, json.Unmarshal([]byte(cliOK(leaser, "acquire", "--pool", "secret-pool", "--consumer", "crawler-1", "--json")), &acq))
		require.Contains(t, acq.Proxy.URL, proxyPassword, "the acquire reply carries the proxy's password: that is what it is for")
		cliOK(leaser, "stats", "--pool", "secret-pool")
		cliOK(leaser, "renew", acq.Lease.ID, "--duration", "120")
		cliOK(leaser, "lease", acq.Lease.ID)
		cliOK(leaser, "release", acq.Lease.ID)
		cliOK(leaser, "events", "--since", "1h", "--count", "3")
		cliOK(admin, "cleanup")
		cliOK(admin, "proxies", "update", proxyID, "--user", "bot", "--password", proxyPassword+"-2")
	}
	check := func(what, text string, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			require.NotContains(t, text, s, "%s contains a secret", what)
		}
	}

	t.Run("passwords, embedded server with the shipped roles", func(t *testing.T) {
		port := strconv.Itoa(natstest.FreePort(t))
		w := startWorker(t, map[string]string{
			"NATS_WORKER_PASSWORD": authtest.WorkerPassword, "NATS_ADMIN_PASSWORD": authtest.AdminPassword, "NATS_LEASER_PASSWORD": authtest.LeaserPassword,
			"PHAROX_NATS_USER": "worker", natsconn.EnvPassword: authtest.WorkerPassword,
			"PHAROX_CREDENTIALS_KEY": credentialsKey,
		}, "--nats-config", "../../deploy/nats-server.conf", "--listen", "0.0.0.0:"+port, "--data-dir", t.TempDir(), "--log-level", "debug")
		url := "nats://127.0.0.1:" + port
		admin := map[string]string{"PHAROX_NATS_URL": url, "PHAROX_NATS_USER": "admin", natsconn.EnvPassword: authtest.AdminPassword, "PHAROX_INBOX_PREFIX": "_INBOX_admin"}
		leaser := map[string]string{"PHAROX_NATS_URL": url, "PHAROX_NATS_USER": "leaser", natsconn.EnvPassword: authtest.LeaserPassword, "PHAROX_INBOX_PREFIX": "_INBOX_leaser"}
		operate(admin, leaser)

		// A leaser's administration is refused by the server, at once and
		// in words.
		start := time.Now()
		r := cli(t, leaser, "pools", "delete", "secret-pool", "--force")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, `pharox: the NATS user this program logs in as may not publish to "pharox.admin.pools.delete" (Permissions Violation): administration needs a user with pharox's admin role`)
		require.Less(t, time.Since(start), 5*time.Second, "not after the request timeout")
		outputs = append(outputs, r.stdout, r.stderr)
		require.Contains(t, cliOK(admin, "pools", "list"), "secret-pool")
		// Without its inbox prefix a leaser cannot read its replies.
		r = cli(t, withEnv(leaser, "PHAROX_INBOX_PREFIX", ""), "stats", "--pool", "secret-pool")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "set --inbox-prefix (PHAROX_INBOX_PREFIX) to the inbox prefix the user may subscribe to")

		evs := events(admin)
		w.stop(t)
		log := w.Log()
		require.Contains(t, log, `"level":"debug"`, "debug logging was on")
		require.Contains(t, log, `"msg":"acquire"`)
		require.Contains(t, log, `(encrypts)"`, "the worker logs its credentials key by id")
		all := []string{authtest.WorkerPassword, authtest.AdminPassword, authtest.LeaserPassword, credentialsKey}
		check("the worker's log", log, append(all, proxyPassword)...)
		check("the events", strings.Join(evs, "\n"), append(all, proxyPassword)...)
		check("the CLI's output", strings.Join(outputs, "\n"), all...)
		for i := 1; i < len(outputs); i += 2 {
			check("the CLI's stderr", outputs[i], proxyPassword)
		}
	})

	t.Run("a token, also inside the URL", func(t *testing.T) {
		outputs = nil
		const token = "nats-token-Hq9"
		srv := authtest.RunServer(t, &server.Options{JetStream: true, Authorization: token})
		tokenURL := strings.Replace(srv.ClientURL(), "nats://", "nats://"+token+"@", 1)
		w := startWorker(t, nil, "--nats-url", tokenURL, "--log-level", "debug")
		env := map[string]string{"PHAROX_NATS_URL": srv.ClientURL(), natsconn.EnvToken: token}
		operate(env, env)
		cliOK(map[string]string{"PHAROX_NATS_URL": tokenURL}, "stats", "--pool", "secret-pool")
		r := cli(t, map[string]string{"PHAROX_NATS_URL": strings.Replace(tokenURL, token, token+"-wrong", 1)}, "stats", "--pool", "secret-pool")
		require.Equal(t, exitError, r.code, r)
		outputs = append(outputs, r.stdout, r.stderr)
		evs := events(env)
		w.stop(t)
		log := w.Log()
		require.Contains(t, log, "the NATS URL carries credentials")
		require.Contains(t, log, `"nats_url":"`+srv.ClientURL()+`"`)
		check("the worker's log", log, token, proxyPassword)
		check("the events", strings.Join(evs, "\n"), token, proxyPassword)
		check("the CLI's output", strings.Join(outputs, "\n"), token)
	})
}

// natsconnConfig is the connection a CLI environment describes.
func natsconnConfig(env map[string]string) natsconn.Config {
	c := natsconn.Config{URL: env["PHAROX_NATS_URL"], User: env["PHAROX_NATS_USER"], InboxPrefix: env["PHAROX_INBOX_PREFIX"]}
	c.LoadEnv(func(k string) string { return env[k] })
	return c
}
