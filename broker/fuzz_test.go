package broker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pharox/pharox-nats/broker"
	"github.com/pharox/pharox-nats/model"
)

// nestFilters is a filter tree depth levels deep along key (all_of, any_of,
// none_of); depth 1 is {}.
func nestFilters(key string, depth int) string {
	return strings.Repeat(`{"`+key+`":[`, depth-1) + `{}` + strings.Repeat(`]}`, depth-1)
}

// wideFilters is one node with n empty children under key: n+1 clauses.
func wideFilters(key string, n int) string {
	return `{"` + key + `":[` + strings.TrimSuffix(strings.Repeat(`{},`, n), ",") + `]}`
}

func filterSeeds() []string {
	return []string{
		`{}`,
		`null`,
		`{"country":"AR","city":"Cordoba","source":"s","isp":"i","asn":7}`,
		`{"latitude":-31.4,"longitude":-64.18,"radius_km":25}`,
		`{"latitude":90,"longitude":180}`,
		`{"latitude":-90.0000001,"longitude":0}`,
		`{"latitude":0,"longitude":0,"radius_km":0}`,
		`{"radius_km":5}`,
		`{"latitude":1}`,
		`{"latitude":1e400,"longitude":0}`,
		`{"asn":1.5}`,
		`{"all_of":[{"country":"AR"}],"any_of":[{"asn":1},{"asn":2}],"none_of":[{"city":"X"}]}`,
		`{"any_of":[{"latitude":10,"longitude":10,"radius_km":1e-9}]}`,
		`{"none_of":[{"all_of":[{"radius_km":1}]}]}`,
		nestFilters("all_of", model.MaxFilterDepth),
		nestFilters("any_of", model.MaxFilterDepth+1),
		nestFilters("none_of", 200),
		wideFilters("any_of", model.MaxFilterClauses-1),
		wideFilters("all_of", model.MaxFilterClauses),
		`{"all_of":[` + wideFilters("any_of", 40) + `,` + wideFilters("none_of", 21) + `]}`,
		`{"all_of":[` + wideFilters("any_of", 40) + `,` + wideFilters("none_of", 22) + `]}`,
		`{"country":"\ud800","city":"\u00e9"}`,
		`{"all_of":null,"any_of":[],"none_of":[null]}`,
		`[]`,
		`{"country":`,
	}
}

func FuzzDecodeAcquire(f *testing.F) {
	seeds := []string{
		``,
		`   `,
		`{}`,
		`{"pool_name":"p"}`,
		`{"pool_name":"p","consumer_name":"c","duration_seconds":60,"selector":"round_robin","wait_seconds":1.5,"request_id":"r"}`,
		`{"pool_name":"p","consumer_name":null,"duration_seconds":null,"filters":null,"selector":null,"wait_seconds":null,"request_id":null}`,
		`{"pool":"p"}`,
		`{"pool_name":5}`,
		`{"pool_name":"p","duration_seconds":1e30}`,
		`{"pool_name":"p","duration_seconds":1.5}`,
		`{"pool_name":"p"} {}`,
		`{"pool_name":"p"}}`,
		`[]`,
		`null`,
		`"x"`,
		"{\"pool_name\":\"\xff\"}",
		`{"pool_name":"\ud800"}`,
		`{"pool_name":"p","filters":{"any_of":[{"contry":"AR"}]}}`,
		`{"pool_name":"p","filters":` + nestFilters("all_of", model.MaxFilterDepth) + `}`,
		`{"pool_name":"p","filters":` + nestFilters("none_of", 500) + `}`,
		`{"pool_name":"p","filters":` + wideFilters("any_of", 100) + `}`,
		`{"pool_name":"p","filters":{"latitude":-31.4,"longitude":-64.18,"radius_km":10}}`,
		`{"POOL_NAME":"p"}`,
		`{"Pool_Name":"p"}`,
		`{"pool_name":"p","pool_name":"q"}`,
		`{"pool_name":"p","selector":"random","SELECTOR":"random"}`,
		`{"pool_name":"p","filters":{"country":"AR","Country":"BR"}}`,
		`{"pool_name":"p","filters":{"any_of":[{"asn":1,"asn":2}]}}`,
		`{"pool_n\u0061me":"p"}`,
		`{"pool_name":"p","pool_n\u0061me":"q"}`,
	}
	for _, s := range filterSeeds() {
		seeds = append(seeds, `{"pool_name":"p","filters":`+s+`}`)
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := broker.Decode[model.AcquireRequest](data)
		if err != nil {
			if !errors.Is(err, model.ErrBadRequest) {
				t.Fatalf("decode error %v is not a bad request", err)
			}
			return
		}
		// Accepted: one UTF-8 JSON object (an empty body stands for {}),
		// every name spelt exactly as a field and given once.
		requireExactNames(t, data)
		trimmed := bytes.TrimSpace(data)
		if !utf8.Valid(data) {
			t.Fatalf("accepted invalid UTF-8: %q", data)
		}
		if len(trimmed) > 0 && (trimmed[0] != '{' || !json.Valid(trimmed)) {
			t.Fatalf("accepted something other than one JSON object: %q", data)
		}
		// What was decoded survives a round trip.
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := broker.Decode[model.AcquireRequest](again)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
		if !reflect.DeepEqual(req, back) {
			t.Fatalf("round trip changed the request: %s", again)
		}
		if req.Filters != nil {
			if err := req.Filters.Validate(); err != nil && !errors.Is(err, model.ErrBadRequest) {
				t.Fatalf("validate error %v is not a bad request", err)
			}
		}
		for _, a := range sampleAttrs() {
			req.Filters.Matches(a) // must not panic, nil filters included
		}
	})
}

// FuzzDecodeExactNames: for the requests whose fields change the most
// (pools.delete's force, proxies.update's partial fields, pools.update's
// health-check options with their free-form headers), an accepted body
// has every name exactly as the field's and no name twice.
func FuzzDecodeExactNames(f *testing.F) {
	for _, s := range []string{
		`{"name":"p","force":true}`,
		`{"name":"p","force":false,"FORCE":true}`,
		`{"name":"p","force":false,"force":true}`,
		`{"proxy_id":"x","credentials":{"user":"u","password":"p"}}`,
		`{"proxy_id":"x","credentials":{"user":"u","password":"p","User":"v"}}`,
		`{"proxy_id":"x","city":null,"city":"Lima"}`,
		`{"name":"p","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","headers":{"X-A":"1","x-a":"2"}}}}`,
		`{"name":"p","health_check":{"enabled":true,"interval_seconds":5,"failure_threshold":1,"options":{"target_url":"http://x","headers":{"X-A":"1","X-A":"2"}}}}`,
		`{"name":"p","health_check":{"enabled":true,"Enabled":false,"interval_seconds":5,"failure_threshold":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, errDelete := broker.Decode[model.PoolDeleteRequest](data)
		_, errUpdate := broker.Decode[model.ProxyUpdateRequest](data)
		_, errPool := broker.Decode[model.PoolUpdateRequest](data)
		for _, err := range []error{errDelete, errUpdate, errPool} {
			if err == nil {
				requireExactNames(t, data)
			} else if !errors.Is(err, model.ErrBadRequest) {
				t.Fatalf("decode error %v is not a bad request", err)
			}
		}
	})
}

// requireExactNames fails unless every object in data has each name once
// and every name is spelt in lower case as the contract's fields are,
// except in the free-form "headers" object. It reads data with
// encoding/json's tokenizer, independently of the decoder under test.
func requireExactNames(t *testing.T, data []byte) {
	t.Helper()
	type container struct {
		object   bool
		names    map[string]bool
		freeForm bool // a map: any name goes
		wantName bool // an object expecting a name next
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*container
	lastName := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			return // io.EOF, or a body the decoder refused anyway
		}
		if len(stack) > 0 && stack[len(stack)-1].wantName {
			top := stack[len(stack)-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].wantName = true
				}
				continue
			}
			name := tok.(string)
			if top.names[name] {
				t.Fatalf("accepted %q twice in %s", name, data)
			}
			top.names[name] = true
			if !top.freeForm && name != strings.ToLower(name) {
				t.Fatalf("accepted the name %q, not spelt as any field, in %s", name, data)
			}
			top.wantName, lastName = false, name
			continue
		}
		switch d, _ := tok.(json.Delim); d {
		case '{':
			stack = append(stack, &container{object: true, names: map[string]bool{}, freeForm: lastName == "headers", wantName: true})
			continue
		case '[':
			stack = append(stack, &container{})
			continue
		case ']':
			stack = stack[:len(stack)-1]
		}
		// A value ended: its object wants the next name.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantName = true
		}
	}
}

func FuzzFilterValidate(f *testing.F) {
	for _, s := range filterSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var flt model.ProxyFilters
		if err := json.Unmarshal(data, &flt); err != nil {
			return
		}
		err := flt.Validate()
		depth, clauses := measureFilters(&flt, 1)
		wantOK := depth <= model.MaxFilterDepth && clauses <= model.MaxFilterClauses && locallyValid(&flt)
		if err != nil && !errors.Is(err, model.ErrBadRequest) {
			t.Fatalf("validate error %v is not a bad request", err)
		}
		if err == nil {
			if depth > model.MaxFilterDepth {
				t.Fatalf("accepted depth %d > %d", depth, model.MaxFilterDepth)
			}
			if clauses > model.MaxFilterClauses {
				t.Fatalf("accepted %d clauses > %d", clauses, model.MaxFilterClauses)
			}
			for _, a := range sampleAttrs() {
				flt.Matches(a)
			}
		}
		if (err == nil) != wantOK {
			t.Fatalf("Validate says %v; independent check (depth %d, clauses %d, nodes valid %v) says ok=%v; input %s",
				err, depth, clauses, locallyValid(&flt), wantOK, data)
		}
	})
}

// measureFilters returns the depth of the tree under f (f at depth d) and
// its number of nodes.
func measureFilters(f *model.ProxyFilters, d int) (depth, nodes int) {
	depth, nodes = d, 1
	for _, group := range [][]model.ProxyFilters{f.AllOf, f.AnyOf, f.NoneOf} {
		for i := range group {
			cd, cn := measureFilters(&group[i], d+1)
			depth = max(depth, cd)
			nodes += cn
		}
	}
	return depth, nodes
}

// locallyValid checks each node's own conditions as the contract states
// them: latitude and longitude together and in range, radius_km > 0 and
// only with coordinates.
func locallyValid(f *model.ProxyFilters) bool {
	if (f.Latitude == nil) != (f.Longitude == nil) {
		return false
	}
	if f.Latitude != nil && !(*f.Latitude >= -90 && *f.Latitude <= 90) {
		return false
	}
	if f.Longitude != nil && !(*f.Longitude >= -180 && *f.Longitude <= 180) {
		return false
	}
	if f.RadiusKm != nil && (f.Latitude == nil || !(*f.RadiusKm > 0) || math.IsInf(*f.RadiusKm, 1)) {
		return false
	}
	for _, group := range [][]model.ProxyFilters{f.AllOf, f.AnyOf, f.NoneOf} {
		for i := range group {
			if !locallyValid(&group[i]) {
				return false
			}
		}
	}
	return true
}

func sampleAttrs() []model.Attrs {
	s := func(v string) *string { return &v }
	fl := func(v float64) *float64 { return &v }
	asn := int64(7)
	return []model.Attrs{
		{},
		{Source: s("s"), Country: s("AR"), City: s("Cordoba"), ISP: s("i"), ASN: &asn, Latitude: fl(-31.4), Longitude: fl(-64.18)},
		{Latitude: fl(90), Longitude: fl(180)},
		{Latitude: fl(-90), Longitude: fl(-180), Country: s("")},
	}
}

// TestFuzzSeedsBehave pins what the seeds mean, so that a change in the
// bounds shows up here and not only as a fuzz failure.
func TestFuzzSeedsBehave(t *testing.T) {
	cases := map[string]bool{
		nestFilters("all_of", model.MaxFilterDepth):                                         true,
		nestFilters("any_of", model.MaxFilterDepth+1):                                       false,
		wideFilters("any_of", model.MaxFilterClauses-1):                                     true,
		wideFilters("all_of", model.MaxFilterClauses):                                       false,
		`{"all_of":[` + wideFilters("any_of", 40) + `,` + wideFilters("none_of", 21) + `]}`: true,
		`{"all_of":[` + wideFilters("any_of", 40) + `,` + wideFilters("none_of", 22) + `]}`: false,
		`{"latitude":0,"longitude":0,"radius_km":0}`:                                        false,
		`{"radius_km":5}`:                              false,
		`{"latitude":90,"longitude":180}`:              true,
		`{"latitude":-90.0000001,"longitude":0}`:       false,
		`{"none_of":[{"all_of":[{"radius_km":1}]}]}`:   false,
		`{"all_of":null,"any_of":[],"none_of":[null]}`: true,
	}
	for in, ok := range cases {
		var flt model.ProxyFilters
		if err := json.Unmarshal([]byte(in), &flt); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if err := flt.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%.80s...) = %v, want ok=%v", in, err, ok)
		}
	}
}
