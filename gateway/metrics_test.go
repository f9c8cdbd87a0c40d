package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/monitor/endpoint"
	"github.com/pharox/pharox-nats/internal/proxytest"
	"github.com/pharox/pharox-nats/model"
)

// serveMetrics serves the gateway's metrics on a loopback port, as
// `pharox gateway --metrics-listen` does, and returns its base URL.
func serveMetrics(t *testing.T, w *gw) string {
	t.Helper()
	srv, err := endpoint.Listen("127.0.0.1:0", endpoint.Config{Gatherer: w.g.Gatherer()}, zap.NewNop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	return "http://" + srv.Addr()
}

// scraped is one scrape of /metrics.
type scraped map[string]*dto.MetricFamily

func scrape(t *testing.T, base string) scraped {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err)
	return families
}

// value is the counter's or gauge's value of the series of family with
// exactly labels (name=value pairs); 0 when there is no such series.
func (s scraped) value(family string, labels ...string) float64 {
	for _, m := range s.series(family, labels...) {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

func (s scraped) series(family string, labels ...string) []*dto.Metric {
	f, ok := s[family]
	if !ok {
		return nil
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var out []*dto.Metric
	for _, m := range f.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		match := true
		for _, l := range m.Label {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// labelValues is every value of label in the scrape.
func (s scraped) labelValues(label string) map[string]bool {
	out := map[string]bool{}
	for _, f := range s {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == label {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestMetrics: after a known sequence of requests (one refused for its
// token, one naming a pool nobody created, one finding no proxy free, two
// forwarded, one CONNECT tunnel, one in a sticky session), the scrape has
// the exact counts, and the made-up pool never becomes a label.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	base := serveMetrics(t, w)
	e.httpPool("metrics", 1)
	e.pool("empty", 0)

	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	s := scrape(t, base)
	require.Equal(t, 0.0, s.value("pharox_gateway_requests_total", "kind", "http", "outcome", "ok"), "series exist from the start")
	require.Len(t, s["pharox_gateway_requests_total"].Metric, 15, "3 kinds x 5 outcomes")
	require.Empty(t, s.labelValues("pool"))

	// Refused: a wrong token (407), a pool nobody created (400).
	code, _, _ := get(t, w.httpClient("pool=metrics", "wrong", false, tg), tg.http.URL+"/ok")
	require.Equal(t, http.StatusProxyAuthRequired, code)
	const madeUp = "madeup-pool-4711"
	code, body, _ := get(t, w.httpClient("pool="+madeUp, token, false, tg), tg.http.URL+"/ok")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "pool_not_found")
	// No proxy free.
	code, _, _ = get(t, w.httpClient("pool=empty", token, false, tg), tg.http.URL+"/ok")
	require.Equal(t, http.StatusServiceUnavailable, code)
	// Two forwarded (wait: the proxy takes one lease at a time, and the
	// previous one's release may not have landed).
	hc := w.httpClient("pool=metrics,wait=5", token, false, tg)
	for _, n := range []string{"1", "2"} {
		code, body, _ = get(t, hc, tg.http.URL+"/ok?n="+n)
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, "ok "+n, body)
	}

	// A CONNECT tunnel carrying a plain HTTP exchange, so that the bytes
	// it carries are known.
	conn, err := net.Dial("tcp", w.httpAddr)
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	target := strings.TrimPrefix(tg.http.URL, "http://")
	_, err = io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+
		basic("pool=metrics,wait=5", token)+"\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	cresp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, cresp.StatusCode)
	require.Eventually(t, func() bool { return scrape(t, base).value("pharox_gateway_open_tunnels") == 1 },
		10*time.Second, 10*time.Millisecond)
	inner := "GET /ok?n=3 HTTP/1.1\r\nHost: " + target + "\r\nConnection: close\r\n\r\n"
	_, err = io.WriteString(conn, inner)
	require.NoError(t, err)
	answer, err := io.ReadAll(br) // the target closes after its answer, and the tunnel with it
	require.NoError(t, err)
	require.Contains(t, string(answer), "ok 3")

	// Each lease's release ends its use: once the three are counted,
	// everything before them is.
	require.Eventually(t, func() bool {
		return scrape(t, base).value("pharox_gateway_leases_total", "pool", "metrics", "outcome", "success") == 3
	}, 20*time.Second, 10*time.Millisecond)
	s = scrape(t, base)
	for _, c := range []struct {
		kind, outcome string
		want          float64
	}{
		{"http", "ok", 2}, {"http", "refused", 2}, {"http", "no_proxy", 1}, {"http", "upstream_failed", 0}, {"http", "error", 0},
		{"connect", "ok", 1}, {"connect", "refused", 0}, {"connect", "error", 0}, {"socks5", "ok", 0},
	} {
		require.Equal(t, c.want, s.value("pharox_gateway_requests_total", "kind", c.kind, "outcome", c.outcome), "%s %s", c.kind, c.outcome)
	}
	require.Equal(t, 5.0, s.value("pharox_gateway_request_duration_seconds", "kind", "http"), "histogram count")
	require.Equal(t, 1.0, s.value("pharox_gateway_request_duration_seconds", "kind", "connect"))
	require.Equal(t, 3.0, s.value("pharox_gateway_acquires_total", "pool", "metrics", "outcome", "granted"))
	require.Equal(t, 1.0, s.value("pharox_gateway_acquires_total", "pool", "empty", "outcome", "none_free"))
	require.Equal(t, 1.0, s.value("pharox_gateway_acquires_total", "pool", "", "outcome", "error"), "the made-up pool")
	require.Len(t, s["pharox_gateway_leases_total"].Metric, 1, "3 successes, nothing else")
	require.Equal(t, float64(len("ok 1")+len("ok 2")+len(answer)), s.value("pharox_gateway_bytes_total", "direction", "to_client"))
	require.Equal(t, float64(len(inner)), s.value("pharox_gateway_bytes_total", "direction", "to_upstream"))
	require.Equal(t, 0.0, s.value("pharox_gateway_open_tunnels"))
	require.Equal(t, 0.0, s.value("pharox_gateway_sessions"))

	// A sticky session: held until its lease lapses.
	code, body, _ = get(t, w.httpClient("pool=metrics,session=s1,wait=5", token, false, tg), tg.http.URL+"/ok?n=4")
	require.Equal(t, http.StatusOK, code, body)
	s = scrape(t, base)
	require.Equal(t, 1.0, s.value("pharox_gateway_sessions"))
	require.Equal(t, 3.0, s.value("pharox_gateway_requests_total", "kind", "http", "outcome", "ok"))
	require.Equal(t, 4.0, s.value("pharox_gateway_acquires_total", "pool", "metrics", "outcome", "granted"))

	// Pool labels are the pools the workers answered for, and "".
	require.Equal(t, map[string]bool{"metrics": true, "empty": true, "": true}, s.labelValues("pool"))
	for name, f := range s {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				require.NotContains(t, l.GetValue(), "madeup", "%s: a pool a client made up is never a label", name)
			}
		}
	}
}

// TestMetricsSOCKS5: a SOCKS5 connection is counted under kind socks5,
// its tunnel's bytes both ways; a made-up pool in a SOCKS5 username is
// counted under pool="".
func TestMetricsSOCKS5(t *testing.T) {
	t.Parallel()
	e, tg, w := envWithGateway(t)
	base := serveMetrics(t, w)
	s5 := proxytest.SOCKS5(t, "bot", "s3cret")
	e.pool("socks", 0, up(model.ProtocolSOCKS5, s5, "bot", "s3cret"))

	body, err := socksGet(t, w, "pool=socks", token, tg.http.URL+"/ok?n=1", tg)
	require.NoError(t, err)
	require.Equal(t, "ok 1", body)
	_, err = socksGet(t, w, "pool=made-up-by-a-client", token, tg.http.URL+"/ok", tg)
	require.Error(t, err)
	_, err = socksGet(t, w, "pool=socks", "wrong", tg.http.URL+"/ok", tg)
	require.Error(t, err)

	require.Eventually(t, func() bool {
		s := scrape(t, base)
		return s.value("pharox_gateway_leases_total", "pool", "socks", "outcome", "success") == 1 &&
			s.value("pharox_gateway_requests_total", "kind", "socks5", "outcome", "refused") == 2
	}, 20*time.Second, 10*time.Millisecond)
	s := scrape(t, base)
	require.Equal(t, 1.0, s.value("pharox_gateway_requests_total", "kind", "socks5", "outcome", "ok"))
	require.Equal(t, 3.0, s.value("pharox_gateway_request_duration_seconds", "kind", "socks5"))
	require.Equal(t, 1.0, s.value("pharox_gateway_acquires_total", "pool", "", "outcome", "error"))
	require.Greater(t, s.value("pharox_gateway_bytes_total", "direction", "to_client"), float64(len("ok 1")))
	require.Greater(t, s.value("pharox_gateway_bytes_total", "direction", "to_upstream"), 0.0)
	require.Equal(t, map[string]bool{"socks": true, "": true}, s.labelValues("pool"))
}
