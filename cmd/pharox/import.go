package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// maxBatchBytes keeps an add request under the worker's 1 MiB limit.
const maxBatchBytes = 1<<20 - 16<<10

// importLine is one proxy read from the file, with where it came from.
type importLine struct {
	line int
	in   model.ProxyInput
	size int // JSON size, for batching
}

// lineNote is a line skipped or refused, and why.
type lineNote struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// importSummary is what `proxies import` reports.
type importSummary struct {
	Pool    string     `json:"pool"`
	Lines   int        `json:"lines"`
	Added   int        `json:"added"`
	Batches int        `json:"batches"`
	Skipped []lineNote `json:"skipped"`
	Refused []lineNote `json:"refused"`
}

func (a *app) importCmd() *cobra.Command {
	var pool, format string
	var batchSize int
	var noProgress, keepExisting bool
	cmd := &cobra.Command{
		Use:   "import --pool POOL FILE",
		Short: "Add proxies from a CSV or JSON-lines file, in batches",
		Long: `Add the proxies of FILE ("-" for stdin) to a pool, in batches of up to 1000.

CSV: a header row naming the columns, then one proxy per row. Columns:
  url (scheme://[user:password@]host:port, instead of host/port/protocol/user/password),
  host, port, protocol, status, user, password, source, country, city,
  latitude, longitude, isp, asn, max_concurrency.
Empty cells are left unset; lines starting with # are comments.

JSON lines: one object per line with the fields of admin.proxies.add
(host, port, protocol, status, credentials {user, password}, source, country,
city, latitude, longitude, isp, asn, max_concurrency) or "url".

Every line is checked before anything is sent, so a bad line is refused on
its own and does not refuse its batch. Lines repeating an earlier line's
proxy (same protocol, host, port and user) are skipped, and so are proxies
the pool already has (unless --keep-existing). A progress bar goes to stderr;
the summary lists skipped and refused lines with their line numbers and why.
Exits 1 if any line was refused.`,
		Example: `  pharox proxies import --pool scrapers proxies.csv
  gzip -dc proxies.jsonl.gz | pharox proxies import --pool scrapers --format jsonl -`,
		Args: exactArgs(1, "one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pool == "" {
				return usageErrorf("--pool is required")
			}
			if batchSize < 1 || batchSize > model.MaxProxiesPerAdd {
				return usageErrorf("--batch-size must be 1..%d, got %d", model.MaxProxiesPerAdd, batchSize)
			}
			format = strings.ToLower(format)
			switch format {
			case "auto", "csv", "jsonl":
			default:
				return usageErrorf("--format must be auto, csv or jsonl, got %q", format)
			}
			var r io.Reader
			name := args[0]
			if name == "-" {
				r = a.stdin
			} else {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			br := bufio.NewReaderSize(r, 1<<16)
			if format == "auto" {
				format = detectFormat(name, br)
			}
			sum := importSummary{Pool: pool, Skipped: []lineNote{}, Refused: []lineNote{}}
			var lines []importLine
			var err error
			if format == "csv" {
				lines, err = readCSV(br, &sum)
			} else {
				lines, err = readJSONLines(br, &sum)
			}
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if !keepExisting {
				if lines, err = skipExisting(cmd.Context(), c, pool, lines, &sum); err != nil {
					return err
				}
			}
			var bar *progressbar.ProgressBar
			if !noProgress && len(lines) > 0 {
				bar = progressbar.NewOptions(len(lines),
					progressbar.OptionSetWriter(a.stderr),
					progressbar.OptionSetDescription("importing into "+pool),
					progressbar.OptionShowCount(),
					progressbar.OptionSetItsString("proxies"),
					progressbar.OptionShowIts(),
					progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(100_000_000),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.stderr) }),
				)
			}
			runErr := a.sendBatches(cmd.Context(), c, pool, lines, batchSize, bar, &sum)
			if bar != nil {
				_ = bar.Finish()
			}
			sortNotes(sum.Skipped)
			sortNotes(sum.Refused)
			if err := a.printSummary(sum); err != nil {
				return err
			}
			if runErr != nil {
				return fmt.Errorf("import stopped after %d added: %w", sum.Added, runErr)
			}
			if len(sum.Refused) > 0 {
				return exitStatus{code: exitError, err: fmt.Errorf("%d line(s) refused", len(sum.Refused))}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&pool, "pool", "p", "", "pool to add to (required)")
	fs.StringVar(&format, "format", "auto", "csv, jsonl, or auto (by extension, else by the first character)")
	fs.IntVar(&batchSize, "batch-size", model.MaxProxiesPerAdd, "proxies per admin.proxies.add request, 1..1000")
	fs.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	fs.BoolVar(&keepExisting, "keep-existing", false, "do not look for proxies the pool already has (faster; a re-run adds them again)")
	return cmd
}

func detectFormat(name string, br *bufio.Reader) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return "csv"
	case ".jsonl", ".ndjson", ".json":
		return "jsonl"
	}
	// The first line that is neither blank nor a comment decides.
	peek, _ := br.Peek(64 << 10)
	for _, line := range bytes.Split(peek, []byte("\n")) {
		line = bytes.TrimLeft(line, " \t\r\ufeff")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if line[0] == '{' {
			return "jsonl"
		}
		break
	}
	return "csv"
}

// dedup tracks the first line of each proxy.
type dedup map[string]int

func proxyKey(in model.ProxyInput) string {
	proto := model.ProtocolHTTP
	if in.Protocol != nil {
		proto = *in.Protocol
	}
	user := ""
	if in.Credentials != nil {
		user = in.Credentials.User
	}
	return fmt.Sprintf("%s://%s@%s:%d", proto, user, strings.ToLower(in.Host), in.Port)
}

// accept validates one parsed proxy and files it as kept, skipped or refused.
func accept(line int, in model.ProxyInput, seen dedup, sum *importSummary, out *[]importLine) {
	if err := validateInput(in); err != nil {
		sum.Refused = append(sum.Refused, lineNote{line, err.Error()})
		return
	}
	key := proxyKey(in)
	if first, dup := seen[key]; dup {
		sum.Skipped = append(sum.Skipped, lineNote{line, fmt.Sprintf("duplicate of line %d", first)})
		return
	}
	seen[key] = line
	data, _ := json.Marshal(in)
	*out = append(*out, importLine{line: line, in: in, size: len(data) + 1})
}

var csvColumns = []string{"url", "host", "port", "protocol", "status", "user", "password", "source", "country", "city", "latitude", "longitude", "isp", "asn", "max_concurrency"}

var csvAliases = map[string]string{"username": "user", "lat": "latitude", "lon": "longitude", "lng": "longitude", "scheme": "protocol", "maxconcurrency": "max_concurrency", "max-concurrency": "max_concurrency"}

func readCSV(r io.Reader, sum *importSummary) ([]importLine, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty: a CSV import needs a header row")
	}
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	cols := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if alias, ok := csvAliases[name]; ok {
			name = alias
		}
		known := false
		for _, c := range csvColumns {
			known = known || c == name
		}
		if !known {
			return nil, fmt.Errorf("CSV header: unknown column %q (known: %s)", h, strings.Join(csvColumns, ", "))
		}
		if _, dup := cols[name]; dup {
			return nil, fmt.Errorf("CSV header: column %q given twice", name)
		}
		cols[name] = i
	}
	_, hasURL := cols["url"]
	_, hasHost := cols["host"]
	if !hasURL && !hasHost {
		return nil, errors.New("CSV header: needs a url column or host and port columns")
	}
	seen := dedup{}
	var out []importLine
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		sum.Lines++
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			sum.Refused = append(sum.Refused, lineNote{perr.StartLine, "malformed CSV: " + perr.Err.Error()})
			continue
		}
		if err != nil {
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			sum.Refused = append(sum.Refused, lineNote{line, fmt.Sprintf("has %d fields, the header %d", len(rec), len(header))})
			continue
		}
		in, err := csvProxy(rec, cols)
		if err != nil {
			sum.Refused = append(sum.Refused, lineNote{line, err.Error()})
			continue
		}
		accept(line, in, seen, sum, &out)
	}
	return out, nil
}

func csvProxy(rec []string, cols map[string]int) (model.ProxyInput, error) {
	get := func(name string) string {
		if i, ok := cols[name]; ok {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var in model.ProxyInput
	if u := get("url"); u != "" {
		if get("host") != "" || get("port") != "" {
			return in, errors.New("give url or host/port, not both")
		}
		p, err := parseProxyURL(u)
		if err != nil {
			return in, fmt.Errorf("url: %v", err)
		}
		in = p
	} else {
		in.Host = get("host")
		if in.Host == "" {
			return in, errors.New("host is empty")
		}
		port, err := strconv.Atoi(get("port"))
		if err != nil {
			return in, fmt.Errorf("port must be a number, got %q", get("port"))
		}
		in.Port = port
	}
	if v := get("protocol"); v != "" {
		p := model.Protocol(strings.ToLower(v))
		in.Protocol = &p
	}
	if v := get("status"); v != "" {
		s := model.ProxyStatus(strings.ToLower(v))
		in.Status = &s
	}
	if user, pw := get("user"), get("password"); user != "" || pw != "" {
		if in.Credentials != nil {
			return in, errors.New("credentials given both in the url and in user/password")
		}
		if user == "" {
			return in, errors.New("password without user")
		}
		in.Credentials = &model.Credentials{User: user, Password: pw}
	}
	for name, dst := range map[string]**string{"source": &in.Source, "country": &in.Country, "city": &in.City, "isp": &in.ISP} {
		if v := get(name); v != "" {
			*dst = &v
		}
	}
	for name, dst := range map[string]**float64{"latitude": &in.Latitude, "longitude": &in.Longitude} {
		if v := get(name); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return in, fmt.Errorf("%s must be a number, got %q", name, v)
			}
			*dst = &f
		}
	}
	if v := get("asn"); v != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(strings.ToUpper(v), "AS"), 10, 64)
		if err != nil {
			return in, fmt.Errorf("asn must be an integer, got %q", v)
		}
		in.ASN = &n
	}
	if v := get("max_concurrency"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return in, fmt.Errorf("max_concurrency must be an integer, got %q", v)
		}
		in.MaxConcurrency = &n
	}
	return in, nil
}

// jsonLine is a JSON-lines record: the add request's proxy fields, or url.
type jsonLine struct {
	model.ProxyInput
	URL *string `json:"url"`
}

func readJSONLines(r io.Reader, sum *importSummary) ([]importLine, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	seen := dedup{}
	var out []importLine
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff"))
		}
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		sum.Lines++
		var rec jsonLine
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			sum.Refused = append(sum.Refused, lineNote{line, "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")})
			continue
		}
		if dec.More() {
			sum.Refused = append(sum.Refused, lineNote{line, "more than one JSON value on the line"})
			continue
		}
		in := rec.ProxyInput
		if rec.URL != nil {
			if in.Host != "" || in.Port != 0 || in.Protocol != nil {
				sum.Refused = append(sum.Refused, lineNote{line, "give url or host/port/protocol, not both"})
				continue
			}
			p, err := parseProxyURL(*rec.URL)
			if err != nil {
				sum.Refused = append(sum.Refused, lineNote{line, "url: " + err.Error()})
				continue
			}
			if p.Credentials != nil && in.Credentials != nil {
				sum.Refused = append(sum.Refused, lineNote{line, "credentials given both in the url and as credentials"})
				continue
			}
			in.Host, in.Port, in.Protocol = p.Host, p.Port, p.Protocol
			if p.Credentials != nil {
				in.Credentials = p.Credentials
			}
		}
		accept(line, in, seen, sum, &out)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return out, nil
}

// skipExisting drops the lines whose proxy the pool already has.
func skipExisting(ctx context.Context, c *client.Client, pool string, lines []importLine, sum *importSummary) ([]importLine, error) {
	if len(lines) == 0 {
		return lines, nil
	}
	have := map[string]string{}
	for p, err := range c.AllProxies(ctx, model.ProxiesListRequest{PoolName: pool, Limit: ptr(model.MaxListLimit)}) {
		if err != nil {
			return nil, err
		}
		in := model.ProxyInput{Host: p.Host, Port: p.Port, Protocol: &p.Protocol, Credentials: p.Credentials}
		have[proxyKey(in)] = p.ID
	}
	if len(have) == 0 {
		return lines, nil
	}
	kept := lines[:0]
	for _, l := range lines {
		if id, ok := have[proxyKey(l.in)]; ok {
			sum.Skipped = append(sum.Skipped, lineNote{l.line, "already in the pool as proxy " + id})
			continue
		}
		kept = append(kept, l)
	}
	return kept, nil
}

// sendBatches adds the lines in batches of at most size proxies and
// maxBatchBytes. A batch the worker refuses as a whole (400 or 413) is split
// in halves until the lines at fault are found; any other error stops.
func (a *app) sendBatches(ctx context.Context, c *client.Client, pool string, lines []importLine, size int, bar *progressbar.ProgressBar, sum *importSummary) error {
	for start := 0; start < len(lines); {
		end, bytes := start, 0
		for end < len(lines) && end-start < size && (end == start || bytes+lines[end].size <= maxBatchBytes) {
			bytes += lines[end].size
			end++
		}
		if err := a.addBatch(ctx, c, pool, lines[start:end], bar, sum); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (a *app) addBatch(ctx context.Context, c *client.Client, pool string, batch []importLine, bar *progressbar.ProgressBar, sum *importSummary) error {
	inputs := make([]model.ProxyInput, len(batch))
	for i, l := range batch {
		inputs[i] = l.in
	}
	sum.Batches++
	added, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: inputs})
	switch {
	case err == nil:
		sum.Added += len(added)
		if bar != nil {
			_ = bar.Add(len(batch))
		}
		return nil
	case errors.Is(err, model.ErrBadRequest) || errors.Is(err, model.ErrPayloadTooLarge):
		if len(batch) == 1 {
			msg := err.Error()
			var ce *client.Error
			if errors.As(err, &ce) {
				msg = strings.TrimPrefix(ce.Message, "proxies[0].")
			}
			sum.Refused = append(sum.Refused, lineNote{batch[0].line, msg})
			if bar != nil {
				_ = bar.Add(1)
			}
			return nil
		}
		mid := len(batch) / 2
		if err := a.addBatch(ctx, c, pool, batch[:mid], bar, sum); err != nil {
			return err
		}
		return a.addBatch(ctx, c, pool, batch[mid:], bar, sum)
	default:
		return err
	}
}

func sortNotes(n []lineNote) {
	sort.SliceStable(n, func(i, j int) bool { return n[i].Line < n[j].Line })
}

func (a *app) printSummary(s importSummary) error {
	if a.jsonOut {
		return a.printJSON(s)
	}
	fmt.Fprintf(a.stdout, "added %d proxies to pool %q in %d batch(es) from %d line(s); skipped %d, refused %d\n",
		s.Added, s.Pool, s.Batches, s.Lines, len(s.Skipped), len(s.Refused))
	for _, n := range s.Skipped {
		fmt.Fprintf(a.stdout, "line %d: skipped: %s\n", n.Line, n.Reason)
	}
	for _, n := range s.Refused {
		fmt.Fprintf(a.stdout, "line %d: refused: %s\n", n.Line, n.Reason)
	}
	return nil
}
