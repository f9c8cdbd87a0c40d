package health_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/health"
	"github.com/pharox/pharox-nats/model"
)

// Everything here listens on 127.0.0.1 and dials only 127.0.0.1.

// targets is the site the probes fetch, over http and https.
type targets struct {
	http, https *httptest.Server
	tls         *tls.Config // trusts the https server
	mu          sync.Mutex
	flaky       map[string]int
}

// startProbing is a probe test's setup: the targets, a prober that trusts
// their TLS, and their URLs that answer 200 over http and over https.
func startProbing(t *testing.T) (tg *targets, p *health.Prober, httpOK, httpsOK string) {
	t.Helper()
	tg = startTargets(t)
	return tg, health.NewProber(tg.tls), tg.http.URL + "/ok", tg.https.URL + "/ok"
}

func startTargets(t *testing.T) *targets {
	t.Helper()
	tg := &targets{flaky: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "slow ok")
	})
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("GET /header", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "yes" || r.Host != "probe.test" {
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	// /flaky?key=k&n=2 fails the first n requests of each key with 500.
	mux.HandleFunc("GET /flaky", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		tg.mu.Lock()
		tg.flaky[r.URL.Query().Get("key")]++
		seen := tg.flaky[r.URL.Query().Get("key")]
		tg.mu.Unlock()
		if seen <= n {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	tg.http = httptest.NewServer(mux)
	tg.https = httptest.NewTLSServer(mux)
	t.Cleanup(tg.http.Close)
	t.Cleanup(tg.https.Close)
	tg.tls = &tls.Config{RootCAs: tg.https.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	return tg
}

func serverPort(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

func proxyAt(protocol model.Protocol, p int, cred *model.Credentials) model.Proxy {
	return model.Proxy{ID: uuid.NewString(), Host: "127.0.0.1", Port: p, Protocol: protocol, Status: model.ProxyActive, Credentials: cred}
}

func creds(user, pass string) *model.Credentials {
	return &model.Credentials{User: user, Password: pass}
}
