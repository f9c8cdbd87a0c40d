package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/model"
)

// TestImportTenThousandLines imports a 10,000-line CSV with bad and
// duplicate lines: those are reported by line number with the reason, and
// every other proxy is added.
func TestImportTenThousandLines(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("pools", "create", "bulk")

	var b strings.Builder
	b.WriteString("host,port,protocol,user,password,country,city,latitude,longitude,asn,max_concurrency\n")
	bad := map[int]string{ // file line -> the reason's words
		101:  "port must be in 1..65535, got 0",
		202:  `port must be a number, got "http"`,
		303:  `protocol must be http, https, socks4 or socks5, got "ftp"`,
		404:  "max_concurrency must be a positive integer",
		505:  "latitude must be in [-90, 90], got 100",
		606:  "has 3 fields, the header 11",
		707:  "host is empty",
		808:  `asn must be an integer, got "big"`,
		909:  "password without user",
		9999: "longitude must be in [-180, 180], got -200",
	}
	dups := map[int]int{5001: 2, 5002: 3, 10001: 10000} // line -> duplicate of line
	for line := 2; line <= 10001; line++ {
		i := line - 2
		row := fmt.Sprintf("10.%d.%d.%d,%d,http,,,AR,Rosario,-32.9,-60.6,7303,2", i/65536, (i/256)%256, i%256, 1024+i%60000)
		switch line {
		case 101:
			row = "10.9.9.9,0,http,,,AR,,,,,"
		case 202:
			row = "10.9.9.9,http,http,,,AR,,,,,"
		case 303:
			row = "10.9.9.9,21,ftp,,,AR,,,,,"
		case 404:
			row = "10.9.9.9,8080,http,,,AR,,,,,0"
		case 505:
			row = "10.9.9.9,8080,http,,,AR,,100,0,,"
		case 606:
			row = "10.9.9.9,8080,http"
		case 707:
			row = ",8080,http,,,AR,,,,,"
		case 808:
			row = "10.9.9.9,8080,http,,,AR,,,,big,"
		case 909:
			row = "10.9.9.9,8080,http,,secret,AR,,,,,"
		case 9999:
			row = "10.9.9.9,8080,socks5,u,p,AR,,0,-200,,"
		}
		if first, ok := dups[line]; ok {
			j := first - 2
			row = fmt.Sprintf("10.%d.%d.%d,%d,HTTP,,,BR,,,,,", j/65536, (j/256)%256, j%256, 1024+j%60000)
		}
		b.WriteString(row + "\n")
	}
	file := filepath.Join(t.TempDir(), "proxies.csv")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o600))

	start := time.Now()
	r := h.run("proxies", "import", "--pool", "bulk", file)
	t.Logf("import of 10,000 lines took %s", time.Since(start))
	require.Equal(t, exitError, r.code, "refused lines make the import exit 1\n%s", r.stderr)
	want := 10000 - len(bad) - len(dups)
	require.Contains(t, r.stdout, fmt.Sprintf("added %d proxies to pool \"bulk\" in 10 batch(es) from 10000 line(s); skipped 3, refused 10\n", want))
	for line, reason := range bad {
		require.Contains(t, r.stdout, fmt.Sprintf("line %d: refused: %s", line, reason))
	}
	for line, first := range dups {
		require.Contains(t, r.stdout, fmt.Sprintf("line %d: skipped: duplicate of line %d\n", line, first))
	}
	require.Contains(t, r.stderr, "importing into bulk", "progress bar on stderr")
	require.Contains(t, r.stderr, "10 line(s) refused")

	st, err := h.c.Stats(h.ctx(), "bulk")
	require.NoError(t, err)
	require.Equal(t, want, st.TotalProxies)
	page, err := h.c.ListProxies(h.ctx(), model.ProxiesListRequest{PoolName: "bulk", Limit: ptr(1)})
	require.NoError(t, err)
	p := page.Proxies[0]
	require.Equal(t, "10.0.0.0", p.Host)
	require.Equal(t, "Rosario", *p.City)
	require.Equal(t, int64(7303), *p.ASN)
	require.Equal(t, 2, *p.MaxConcurrency)
	require.InDelta(t, -60.6, *p.Longitude, 1e-9)

	// Again, as JSON: everything is in the pool already and nothing is added.
	r = h.run("proxies", "import", "--pool", "bulk", file, "--json", "--no-progress")
	require.Equal(t, exitError, r.code, r.stderr)
	var sum importSummary
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &sum))
	require.Equal(t, 0, sum.Added)
	require.Len(t, sum.Refused, 10)
	require.Len(t, sum.Skipped, want+len(dups))
	require.Equal(t, lineNote{Line: 2, Reason: "already in the pool as proxy " + p.ID}, sum.Skipped[0])
	require.Empty(t, r.stderr[:strings.Index(r.stderr, "pharox:")], "no progress bar")
}

func TestImportJSONLines(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("pools", "create", "jl")
	lines := strings.Join([]string{
		`# a comment, then a blank line`,
		``,
		`{"host":"127.0.0.1","port":3128,"country":"AR","max_concurrency":1}`,
		`{"url":"socks5://bot:s3cret@127.0.0.1:1080","country":"BR"}`,
		`{"host":"127.0.0.1","port":3129,"credentials":{"user":"a","password":"b"},"status":"inactive"}`,
		`{"host":"127.0.0.1","port":3130,"pool":"typo"}`,
		`{"host":"127.0.0.1","port":`,
		`{"url":"socks5://other@127.0.0.1:1080"}`,
		`{"url":"socks5://bot:again@127.0.0.1:1080"}`,
		`{"host":"127.0.0.1","port":3131,"status":"dead"}`,
	}, "\n") + "\n"
	file := filepath.Join(t.TempDir(), "proxies.txt") // no extension: detected by content
	require.NoError(t, os.WriteFile(file, []byte(lines), 0o600))
	r := h.run("proxies", "import", "--pool", "jl", file, "--no-progress")
	require.Equal(t, exitError, r.code, r)
	require.Equal(t, `added 3 proxies to pool "jl" in 1 batch(es) from 8 line(s); skipped 1, refused 4
line 9: skipped: duplicate of line 4
line 6: refused: malformed JSON: unknown field "pool"
line 7: refused: malformed JSON: unexpected EOF
line 8: refused: credentials need both a user and a password (leave them out for none)
line 10: refused: status must be active, inactive, slow or banned, got "dead"
`, r.stdout)
	list, err := h.c.ListProxies(h.ctx(), model.ProxiesListRequest{PoolName: "jl"})
	require.NoError(t, err)
	require.Len(t, list.Proxies, 3)
	require.Equal(t, "socks5://bot:s3cret@127.0.0.1:1080", list.Proxies[1].URL)
	require.Equal(t, model.ProxyInactive, list.Proxies[2].Status)

	// From stdin, CSV with a url column, all good: exit 0.
	var stdout, stderr strings.Builder
	code := execute(h.ctx(), []string{"proxies", "import", "--pool", "jl", "-", "--no-progress"},
		strings.NewReader("url,country\nhttp://10.0.0.1:80,AR\nhttp://10.0.0.2:80,\n"), &stdout, &stderr,
		func(k string) string { return h.env[k] })
	require.Equal(t, 0, code, stderr.String())
	require.Equal(t, "added 2 proxies to pool \"jl\" in 1 batch(es) from 2 line(s); skipped 0, refused 0\n", stdout.String())

	// A header the importer does not know stops before anything is sent.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("host,port,colour\n1.2.3.4,80,red\n"), 0o600))
	r = h.run("proxies", "import", "--pool", "jl", bad)
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, `unknown column "colour"`)

	r = h.run("proxies", "import", "--pool", "nope", file, "--no-progress")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "pool_not_found")
}

// TestImportSplitsARefusedBatch: when the worker refuses a whole batch for
// a line the client could not know was bad, the batch is split until that
// line is found, and the rest is added. A fake worker refuses port 666.
func TestImportSplitsARefusedBatch(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	var requests atomic.Int32
	_, err := nc.Subscribe("fake.admin.proxies.add", func(m *nats.Msg) {
		requests.Add(1)
		var req model.ProxiesAddRequest
		_ = json.Unmarshal(m.Data, &req)
		out := model.ProxiesReply{Proxies: []model.Proxy{}}
		for i, p := range req.Proxies {
			if p.Port == 666 {
				reply := nats.NewMsg(m.Reply)
				reply.Header.Set("Nats-Service-Error-Code", "400")
				reply.Header.Set("Nats-Service-Error", "evil port")
				reply.Data = []byte(fmt.Sprintf(`{"error":{"code":"bad_request","message":"proxies[%d].port 666 is not allowed"}}`, i))
				_ = m.RespondMsg(reply)
				return
			}
			out.Proxies = append(out.Proxies, model.Proxy{Host: p.Host, Port: p.Port})
		}
		data, _ := json.Marshal(out)
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	var b strings.Builder
	b.WriteString("host,port\n")
	for i := range 100 {
		port := 1000 + i
		if i == 37 || i == 80 {
			port = 666
		}
		fmt.Fprintf(&b, "10.0.0.%d,%d\n", i, port)
	}
	file := filepath.Join(t.TempDir(), "p.csv")
	require.NoError(t, os.WriteFile(file, []byte(b.String()), 0o600))
	var stdout, stderr strings.Builder
	env := map[string]string{"PHAROX_NATS_URL": srv.ClientURL(), "PHAROX_SUBJECT_PREFIX": "fake"}
	code := execute(t.Context(), []string{"proxies", "import", "--pool", "p", file, "--keep-existing", "--batch-size", "50", "--no-progress"},
		nil, &stdout, &stderr, func(k string) string { return env[k] })
	require.Equal(t, exitError, code, stderr.String())
	require.Contains(t, stdout.String(), "added 98 proxies")
	require.Contains(t, stdout.String(), "line 39: refused: port 666 is not allowed\n")
	require.Contains(t, stdout.String(), "line 82: refused: port 666 is not allowed\n")
	require.Less(t, int(requests.Load()), 30)
}
