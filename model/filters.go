package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// Filter bounds keep a hostile request from costing unbounded work.
const (
	MaxFilterDepth   = 8
	MaxFilterClauses = 64
	earthRadiusKm    = 6371.0
	coordEpsilon     = 1e-6
)

// ProxyFilters is the contract's filter tree; every given condition must hold.
type ProxyFilters struct {
	// Protocol (v1.1): the proxy's protocol is one of these.
	Protocol  Protocols      `json:"protocol"`
	Source    *string        `json:"source"`
	Country   *string        `json:"country"`
	City      *string        `json:"city"`
	ISP       *string        `json:"isp"`
	ASN       *int64         `json:"asn"`
	Latitude  *float64       `json:"latitude"`
	Longitude *float64       `json:"longitude"`
	RadiusKm  *float64       `json:"radius_km"`
	AllOf     []ProxyFilters `json:"all_of"`
	AnyOf     []ProxyFilters `json:"any_of"`
	NoneOf    []ProxyFilters `json:"none_of"`
}

// Validate checks ranges, pairings and the depth/clause bounds.
func (f *ProxyFilters) Validate() error {
	if f == nil {
		return nil
	}
	clauses := 0
	return f.validate(1, &clauses)
}

func (f *ProxyFilters) validate(depth int, clauses *int) error {
	if depth > MaxFilterDepth {
		return Errorf(ErrBadRequest, "filters nest deeper than %d levels", MaxFilterDepth)
	}
	*clauses++
	if *clauses > MaxFilterClauses {
		return Errorf(ErrBadRequest, "filters have more than %d clauses", MaxFilterClauses)
	}
	if f.Protocol != nil {
		if len(f.Protocol) == 0 {
			return Errorf(ErrBadRequest, "filters protocol must be a protocol or a non-empty list of them, got []")
		}
		for _, p := range f.Protocol {
			if !p.Valid() {
				return Errorf(ErrBadRequest, "filters protocol must be http, https, socks4 or socks5, got %q", p)
			}
		}
	}
	if (f.Latitude == nil) != (f.Longitude == nil) {
		return Errorf(ErrBadRequest, "filters latitude and longitude must be given together")
	}
	if f.Latitude != nil && (math.IsNaN(*f.Latitude) || *f.Latitude < -90 || *f.Latitude > 90) {
		return Errorf(ErrBadRequest, "filters latitude must be in [-90, 90]")
	}
	if f.Longitude != nil && (math.IsNaN(*f.Longitude) || *f.Longitude < -180 || *f.Longitude > 180) {
		return Errorf(ErrBadRequest, "filters longitude must be in [-180, 180]")
	}
	if f.RadiusKm != nil {
		if f.Latitude == nil {
			return Errorf(ErrBadRequest, "filters radius_km needs latitude and longitude")
		}
		if !(*f.RadiusKm > 0) || math.IsInf(*f.RadiusKm, 0) {
			return Errorf(ErrBadRequest, "filters radius_km must be > 0")
		}
	}
	for _, group := range [][]ProxyFilters{f.AllOf, f.AnyOf, f.NoneOf} {
		for i := range group {
			if err := group[i].validate(depth+1, clauses); err != nil {
				return err
			}
		}
	}
	return nil
}

// Attrs are the proxy attributes filters look at.
type Attrs struct {
	Protocol                   Protocol
	Source, Country, City, ISP *string
	ASN                        *int64
	Latitude, Longitude        *float64
}

// Attrs returns the attributes of p that filters look at.
func (p *Proxy) Attrs() Attrs {
	return Attrs{Protocol: p.Protocol, Source: p.Source, Country: p.Country, City: p.City, ISP: p.ISP, ASN: p.ASN, Latitude: p.Latitude, Longitude: p.Longitude}
}

// Matches reports whether a proxy with attributes p satisfies every
// condition of f. A nil filter matches everything.
func (f *ProxyFilters) Matches(p Attrs) bool {
	if f == nil {
		return true
	}
	if f.Protocol != nil && !slices.Contains(f.Protocol, p.Protocol) {
		return false
	}
	if !strEq(f.Source, p.Source) || !strEq(f.Country, p.Country) ||
		!strEq(f.City, p.City) || !strEq(f.ISP, p.ISP) {
		return false
	}
	if f.ASN != nil && (p.ASN == nil || *p.ASN != *f.ASN) {
		return false
	}
	if f.Latitude != nil && f.Longitude != nil {
		if p.Latitude == nil || p.Longitude == nil {
			return false
		}
		if f.RadiusKm != nil {
			if HaversineKm(*f.Latitude, *f.Longitude, *p.Latitude, *p.Longitude) > *f.RadiusKm {
				return false
			}
		} else if math.Abs(*p.Latitude-*f.Latitude) > coordEpsilon || math.Abs(*p.Longitude-*f.Longitude) > coordEpsilon {
			return false
		}
	}
	for i := range f.AllOf {
		if !f.AllOf[i].Matches(p) {
			return false
		}
	}
	if len(f.AnyOf) > 0 {
		any := false
		for i := range f.AnyOf {
			if f.AnyOf[i].Matches(p) {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	for i := range f.NoneOf {
		if f.NoneOf[i].Matches(p) {
			return false
		}
	}
	return true
}

// HaversineKm is the great-circle distance on a 6371.0 km sphere.
func HaversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}

func strEq(want, have *string) bool {
	return want == nil || (have != nil && *have == *want)
}

// Protocols is the protocol filter: one protocol or a list of them. It
// decodes from a string or an array (an empty array stays non-nil, so that
// validation refuses it) and encodes as an array; nil is no condition.
type Protocols []Protocol

// UnmarshalJSON implements json.Unmarshaler.
func (p *Protocols) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*p = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var one Protocol
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*p = Protocols{one}
		return nil
	}
	var list []Protocol
	if err := json.Unmarshal(b, &list); err != nil {
		// Not wrapped: the decoder's own words would name no field.
		return fmt.Errorf("filters protocol must be a protocol or a list of them, got JSON %.40s", b)
	}
	if list == nil {
		list = Protocols{}
	}
	*p = list
	return nil
}

// MarshalJSON implements json.Marshaler.
func (p Protocols) MarshalJSON() ([]byte, error) {
	if p == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]Protocol(p))
}
