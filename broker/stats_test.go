package broker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// TestServiceStatsCountWhatHappened sends a known mix of requests
// (successes, 400s, 404s, a 503) to one broker and reads its $SRV.STATS:
// each endpoint counts its requests, its errors, its last error as micro
// words it ("<status>:<message>") and the time spent on them.
func TestServiceStatsCountWhatHappened(t *testing.T) {
	e := newEnv(t, envConfig{})
	// A broker of its own (prefix "st") on the worker's manager and
	// without health checks, so that admin.health.check is a 503.
	snc := natstest.Connect(t, e.srv)
	brk, err := broker.Start(snc, e.workers[0].Manager, broker.WithPrefix("st"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = brk.Stop(context.Background()) })
	require.NoError(t, snc.Flush())
	id := brk.Info().ID

	type count struct {
		requests, errors int
		lastError        string
	}
	want := map[string]*count{}
	for _, ep := range brk.Info().Endpoints {
		want[ep.Subject] = &count{}
	}
	send := func(op, body string, status int) {
		t.Helper()
		msg, err := e.nc.Request("st."+op, []byte(body), requestTimeout)
		require.NoError(t, err)
		c := want["st."+op]
		c.requests++
		if status == 0 {
			require.Empty(t, msg.Header.Get(micro.ErrorCodeHeader), "%s: %s", op, msg.Data)
			return
		}
		require.Equal(t, status, atoi(t, msg.Header.Get(micro.ErrorCodeHeader)), "%s: %s", op, msg.Data)
		c.errors++
		c.lastError = msg.Header.Get(micro.ErrorCodeHeader) + ":" + msg.Header.Get(micro.ErrorHeader)
	}
	send("admin.pools.create", `{"name":"mix"}`, 0)
	send("admin.pools.create", `{"nme":"mix"}`, 400)
	send("admin.proxies.add", `{"pool_name":"mix","proxies":[{"host":"h","port":1}]}`, 0)
	send("stats", `{"pool_name":"mix"}`, 0)
	send("stats", `{"pool_name":"nope"}`, 404)
	send("stats", `{"pool_name":"mix"}`, 0)
	send("acquire", `{"pool_name":"nope"}`, 404)
	send("acquire", `{"pool_name":"mix","duration_seconds":0}`, 400)
	send("acquire", `{"pool_name":"mix"}`, 0)
	send("leases.get", `{"lease_id":"not-a-lease"}`, 404)
	send("admin.health.check", `{"pool_name":"mix"}`, 503)
	send("admin.proxies.get", `not json`, 400)

	st := srvRequest[micro.Stats](t, e.nc, micro.StatsVerb, id)
	require.Equal(t, micro.StatsResponseType, st.Type)
	require.Equal(t, broker.ServiceName, st.Name)
	require.Equal(t, id, st.ID)
	require.Equal(t, "st", st.Metadata["subject_prefix"])
	require.False(t, st.Started.IsZero())
	require.Len(t, st.Endpoints, len(want))
	for _, ep := range st.Endpoints {
		w := want[ep.Subject]
		require.NotNil(t, w, ep.Subject)
		require.Equal(t, w.requests, ep.NumRequests, ep.Subject)
		require.Equal(t, w.errors, ep.NumErrors, ep.Subject)
		require.Equal(t, w.lastError, ep.LastError, ep.Subject)
		require.Equal(t, micro.DefaultQueueGroup, ep.QueueGroup)
		require.Equal(t, strings.ReplaceAll(strings.TrimPrefix(ep.Subject, "st."), ".", "-"), ep.Name)
		if w.requests > 0 {
			require.Positive(t, ep.ProcessingTime, ep.Subject)
			require.Positive(t, ep.AverageProcessingTime, ep.Subject)
			require.LessOrEqual(t, ep.AverageProcessingTime, ep.ProcessingTime, ep.Subject)
		} else {
			require.Zero(t, ep.ProcessingTime, ep.Subject)
		}
	}
	require.Equal(t, 3, want["st.acquire"].requests, "the mix reached the endpoints it names")
	require.Equal(t, `404:pool "nope" does not exist`, want["st.stats"].lastError)

	// The same numbers through the Go API, and the other control subjects
	// of this instance answer with micro's types.
	require.Equal(t, st.Endpoints, brk.Stats().Endpoints)
	ping := srvRequest[micro.Ping](t, e.nc, micro.PingVerb, id)
	require.Equal(t, micro.PingResponseType, ping.Type)
	require.Equal(t, broker.Version, ping.Version)
	info := srvRequest[micro.Info](t, e.nc, micro.InfoVerb, id)
	require.Equal(t, micro.InfoResponseType, info.Type)
	require.Equal(t, brk.Subjects(), subjectsOf(info))
}

func subjectsOf(info micro.Info) []string {
	var out []string
	for _, ep := range info.Endpoints {
		out = append(out, ep.Subject)
	}
	return out
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err, s)
	return n
}

// blockingChecker holds every admin.health.check until release is closed.
type blockingChecker struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingChecker) CheckHealth(ctx context.Context, _ model.HealthCheckRequest) (model.HealthCheckReply, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return model.HealthCheckReply{Results: []model.HealthCheckResult{}}, nil
}

// TestOverTheLineIsAnswered503 fills a broker's one in-flight slot and its
// line of one waiting request: the requests over it are answered 503 at
// once (never dropped unanswered, as NATS would drop a slow consumer's),
// and $SRV.STATS counts them as errors of their endpoint; once the slot is
// free the request in line is served.
func TestOverTheLineIsAnswered503(t *testing.T) {
	srv := natstest.RunServer(t)
	w := workertest.Start(t, natstest.Connect(t, srv), workertest.Config{})
	bnc, cnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	hc := &blockingChecker{entered: make(chan struct{}, 16), release: make(chan struct{})}
	brk, err := broker.Start(bnc, w.Manager, broker.WithPrefix("sc"), broker.WithMaxInflight(1), broker.WithPendingLimits(1, -1),
		broker.WithRequestTimeout(time.Minute), broker.WithHealthChecker(hc))
	require.NoError(t, err)
	t.Cleanup(func() { _ = brk.Stop(context.Background()) })
	released := false
	defer func() {
		if !released {
			close(hc.release)
		}
	}()
	require.NoError(t, bnc.Flush())

	replies, err := cnc.SubscribeSync(nats.NewInbox() + ".*")
	require.NoError(t, err)
	inbox := strings.TrimSuffix(replies.Subject, "*")
	body := []byte(`{"pool_name":"x"}`)
	// The first request takes the only slot; the second waits in line;
	// the other three are over the line.
	require.NoError(t, cnc.PublishRequest("sc.admin.health.check", inbox+"0", body))
	require.NoError(t, cnc.Flush())
	<-hc.entered
	for i := 1; i <= 4; i++ {
		require.NoError(t, cnc.PublishRequest("sc.admin.health.check", inbox+strconv.Itoa(i), body))
	}
	for range 3 {
		msg, err := replies.NextMsg(requestTimeout)
		require.NoError(t, err)
		require.NotEqual(t, inbox+"1", msg.Subject, "the request in line waits for the slot")
		require.Equal(t, "503", msg.Header.Get(micro.ErrorCodeHeader), string(msg.Data))
		require.Contains(t, string(msg.Data), "too many")
	}

	st := srvRequest[micro.Stats](t, cnc, micro.StatsVerb, brk.Info().ID)
	var ep *micro.EndpointStats
	for _, e := range st.Endpoints {
		if e.Subject == "sc.admin.health.check" {
			ep = e
		}
	}
	require.NotNil(t, ep)
	require.Equal(t, 3, ep.NumErrors)
	require.Contains(t, ep.LastError, "503:")

	// Once the slot is free the request in line is served, after the first.
	close(hc.release)
	released = true
	for _, want := range []string{"0", "1"} {
		msg, err := replies.NextMsg(requestTimeout)
		require.NoError(t, err)
		require.Equal(t, inbox+want, msg.Subject)
		require.Empty(t, msg.Header.Get(micro.ErrorCodeHeader), string(msg.Data))
	}
}
