package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// A proxy record is written in a versioned binary layout, not JSON: a fresh
// worker decodes every record of the bucket before it serves, and JSON
// decoding was half of that load (10.6 µs of about 20 µs per proxy at a
// million proxies) and most of its garbage. Records are internal (never a
// reply or an event), so only workers read them. Decode still reads the
// JSON records written before this layout; a record is stored in the new
// layout the next time a worker writes it.
//
// Layout, version 1 (every integer a varint, signed ones zigzag; a string is
// its length then its bytes; a time is its Unix seconds then nanoseconds,
// read back in UTC; a float its IEEE 754 bits, 8 bytes little-endian):
//
//	0x01 (the version; a JSON record starts with '{')
//	flags (which optional fields follow, see the f* bits)
//	id, host, pool_id, pool_name, seq, port, protocol, status
//	nonce (8 bytes little-endian)
//	the optional fields the flags name, in the order of their bits
//	holder count, then each holder: lease_id, consumer_id, consumer_name,
//	acquired_at, expires_at, token
//
// A layout change gets a new version byte; a reader refuses a version or a
// flag it does not know rather than drop fields that its next write of the
// record would then lose.
const formatV1 byte = 0x01

// The optional fields of layout 1, in the order they are written.
const (
	fCheckedAt uint64 = 1 << iota
	fCredentials
	fSealed
	fSource
	fCountry
	fCity
	fLatitude
	fLongitude
	fISP
	fASN
	fMaxConcurrency
	fHealth
	fConsecutiveFailures
	fCooldownUntil

	fKnown = fCooldownUntil<<1 - 1
)

// The optional fields of a Health, in the order they are written.
const (
	hStatusCode uint64 = 1 << iota
	hErrorMessage

	hKnown = hErrorMessage<<1 - 1
)

// encodeBinary appends rec in layout 1; creds and sealed are the
// credentials as this write stores them (see Encode).
func encodeBinary(rec *Proxy, creds *model.Credentials, sealed string, nonce uint64) []byte {
	w := make([]byte, 0, 160+len(rec.Holders)*128+len(sealed))
	w = append(w, formatV1)
	w = binary.AppendUvarint(w, optionalFlags(rec, creds, sealed))
	w = appendString(w, rec.ID)
	w = appendString(w, rec.Host)
	w = appendString(w, rec.PoolID)
	w = appendString(w, rec.PoolName)
	w = binary.AppendUvarint(w, rec.Seq)
	w = binary.AppendVarint(w, int64(rec.Port))
	w = appendString(w, string(rec.Protocol))
	w = appendString(w, string(rec.Status))
	w = binary.LittleEndian.AppendUint64(w, nonce)
	if rec.CheckedAt != nil {
		w = appendTime(w, *rec.CheckedAt)
	}
	if creds != nil {
		w = appendString(w, creds.User)
		w = appendString(w, creds.Password)
	}
	if sealed != "" {
		w = appendString(w, sealed)
	}
	for _, s := range []*string{rec.Source, rec.Country, rec.City} {
		if s != nil {
			w = appendString(w, *s)
		}
	}
	for _, f := range []*float64{rec.Latitude, rec.Longitude} {
		if f != nil {
			w = binary.LittleEndian.AppendUint64(w, math.Float64bits(*f))
		}
	}
	if rec.ISP != nil {
		w = appendString(w, *rec.ISP)
	}
	if rec.ASN != nil {
		w = binary.AppendVarint(w, *rec.ASN)
	}
	if rec.MaxConcurrency != nil {
		w = binary.AppendVarint(w, int64(*rec.MaxConcurrency))
	}
	if rec.Health != nil {
		w = appendHealth(w, rec.Health)
	}
	if rec.ConsecutiveFailures != 0 {
		w = binary.AppendVarint(w, int64(rec.ConsecutiveFailures))
	}
	if rec.CooldownUntil != nil {
		w = appendTime(w, *rec.CooldownUntil)
	}
	w = binary.AppendUvarint(w, uint64(len(rec.Holders)))
	for i := range rec.Holders {
		h := &rec.Holders[i]
		w = appendString(w, h.LeaseID)
		w = appendString(w, h.ConsumerID)
		w = appendString(w, h.ConsumerName)
		w = appendTime(w, h.AcquiredAt)
		w = appendTime(w, h.ExpiresAt)
		w = binary.AppendUvarint(w, h.Token)
	}
	return w
}

// optionalFlags says which optional fields of rec the write stores.
func optionalFlags(rec *Proxy, creds *model.Credentials, sealed string) uint64 {
	var f uint64
	set := func(bit uint64, present bool) {
		if present {
			f |= bit
		}
	}
	set(fCheckedAt, rec.CheckedAt != nil)
	set(fCredentials, creds != nil)
	set(fSealed, sealed != "")
	set(fSource, rec.Source != nil)
	set(fCountry, rec.Country != nil)
	set(fCity, rec.City != nil)
	set(fLatitude, rec.Latitude != nil)
	set(fLongitude, rec.Longitude != nil)
	set(fISP, rec.ISP != nil)
	set(fASN, rec.ASN != nil)
	set(fMaxConcurrency, rec.MaxConcurrency != nil)
	set(fHealth, rec.Health != nil)
	set(fConsecutiveFailures, rec.ConsecutiveFailures != 0)
	set(fCooldownUntil, rec.CooldownUntil != nil)
	return f
}

func appendHealth(w []byte, h *Health) []byte {
	var f uint64
	if h.StatusCode != nil {
		f |= hStatusCode
	}
	if h.ErrorMessage != nil {
		f |= hErrorMessage
	}
	w = binary.AppendUvarint(w, f)
	w = appendString(w, string(h.Status))
	w = binary.LittleEndian.AppendUint64(w, math.Float64bits(h.LatencyMs))
	w = appendString(w, string(h.Protocol))
	w = binary.AppendVarint(w, int64(h.Attempts))
	w = appendTime(w, h.CheckedAt)
	if h.StatusCode != nil {
		w = binary.AppendVarint(w, int64(*h.StatusCode))
	}
	if h.ErrorMessage != nil {
		w = appendString(w, *h.ErrorMessage)
	}
	return w
}

func appendString(w []byte, s string) []byte {
	w = binary.AppendUvarint(w, uint64(len(s)))
	return append(w, s...)
}

func appendTime(w []byte, t time.Time) []byte {
	w = binary.AppendVarint(w, t.Unix())
	return binary.AppendUvarint(w, uint64(t.Nanosecond()))
}

// errTruncated: a record that ends inside a field.
var errTruncated = errors.New("record ends inside a field")

// reader reads layout 1. The first error sticks: every later read returns
// zero values, so decoding checks once at the end.
type reader struct {
	data []byte
	err  error
	strs *strTable // shares the values most records repeat; nil: none
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.data = nil
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.data)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.data = r.data[n:]
	return v
}

// varint is a signed varint: an unsigned one, zigzag-decoded as
// binary.Varint does, so a truncated one fails the same way.
func (r *reader) varint() int64 {
	ux := r.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (r *reader) int() int {
	v := r.varint()
	if int64(int(v)) != v {
		r.fail(fmt.Errorf("integer %d out of range", v))
		return 0
	}
	return int(v)
}

func (r *reader) fixed64() uint64 {
	if len(r.data) < 8 {
		r.fail(errTruncated)
		return 0
	}
	v := binary.LittleEndian.Uint64(r.data)
	r.data = r.data[8:]
	return v
}

func (r *reader) float() float64 { return math.Float64frombits(r.fixed64()) }

// bytes is a string field's bytes, still in the record's buffer.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.data)) {
		r.fail(errTruncated)
		return nil
	}
	b := r.data[:n]
	r.data = r.data[n:]
	return b
}

// str is a string field of its own (one proxy's, like a lease id).
func (r *reader) str() string { return string(r.bytes()) }

// shared is a string field most records repeat (a pool, a country).
func (r *reader) shared() string { return r.strs.str(r.bytes()) }

func (r *reader) sharedPtr() *string { return r.strs.ptr(r.bytes()) }

func (r *reader) time() time.Time {
	sec, nsec := r.varint(), r.uvarint()
	if nsec >= 1e9 {
		r.fail(fmt.Errorf("nanoseconds %d out of range", nsec))
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (r *reader) timePtr() *time.Time {
	t := r.time()
	return &t
}

// decodeBinary reads a record of layout 1 (data[0] is its version). The
// credentials come back as stored: in clear in rec, or sealed.
func decodeBinary(data []byte, strs *strTable) (rec *Proxy, sealed string, err error) {
	r := &reader{data: data[1:], strs: strs}
	flags := r.uvarint()
	if unknown := flags &^ fKnown; unknown != 0 && r.err == nil {
		return nil, "", fmt.Errorf("record of layout %d has fields unknown here (flags %#x)", formatV1, unknown)
	}
	rec = new(Proxy)
	// The id and the host are the proxy's own: one allocation for both.
	rec.ID, rec.Host = r.pair()
	rec.PoolID, rec.PoolName = r.shared(), r.shared()
	rec.Seq = r.uvarint()
	rec.Port = r.int()
	rec.Protocol, rec.Status = model.Protocol(r.shared()), model.ProxyStatus(r.shared())
	r.fixed64() // the nonce: only the bytes need it
	has := func(bit uint64) bool { return flags&bit != 0 && r.err == nil }
	if has(fCheckedAt) {
		rec.CheckedAt = r.timePtr()
	}
	if has(fCredentials) {
		user, password := r.pair()
		rec.Credentials = &model.Credentials{User: user, Password: password}
	}
	if has(fSealed) {
		sealed = r.str()
	}
	for _, f := range []struct {
		bit uint64
		p   **string
	}{{fSource, &rec.Source}, {fCountry, &rec.Country}, {fCity, &rec.City}} {
		if has(f.bit) {
			*f.p = r.sharedPtr()
		}
	}
	if has(fLatitude) {
		rec.Latitude = ptrTo(r.float())
	}
	if has(fLongitude) {
		rec.Longitude = ptrTo(r.float())
	}
	if has(fISP) {
		rec.ISP = r.sharedPtr()
	}
	if has(fASN) {
		rec.ASN = ptrTo(r.varint())
	}
	if has(fMaxConcurrency) {
		rec.MaxConcurrency = ptrTo(r.int())
	}
	if has(fHealth) {
		rec.Health = r.health()
	}
	if has(fConsecutiveFailures) {
		rec.ConsecutiveFailures = r.int()
	}
	if has(fCooldownUntil) {
		rec.CooldownUntil = r.timePtr()
	}
	rec.Holders = r.holders()
	if r.err == nil && len(r.data) > 0 {
		r.fail(fmt.Errorf("%d bytes after the record", len(r.data)))
	}
	if r.err != nil {
		return nil, "", fmt.Errorf("decode proxy record: %w", r.err)
	}
	return rec, sealed, nil
}

// pair reads two adjacent string fields into one allocation.
func (r *reader) pair() (string, string) {
	a, b := r.bytes(), r.bytes()
	var sb strings.Builder
	sb.Grow(len(a) + len(b))
	sb.Write(a)
	sb.Write(b)
	s := sb.String()
	return s[:len(a)], s[len(a):]
}

func (r *reader) health() *Health {
	f := r.uvarint()
	if unknown := f &^ hKnown; unknown != 0 {
		r.fail(fmt.Errorf("health result has fields unknown here (flags %#x)", unknown))
		return nil
	}
	h := &Health{Status: model.ProxyStatus(r.shared()), LatencyMs: r.float(), Protocol: model.Protocol(r.shared()),
		Attempts: r.int(), CheckedAt: r.time()}
	if f&hStatusCode != 0 {
		h.StatusCode = ptrTo(r.int())
	}
	if f&hErrorMessage != 0 {
		h.ErrorMessage = ptrTo(r.str())
	}
	return h
}

func (r *reader) holders() []Holder {
	n := r.uvarint()
	// Each holder takes at least 9 bytes: a bound that a damaged count
	// cannot turn into a huge allocation.
	if n == 0 || n > uint64(len(r.data)/9) {
		if n != 0 {
			r.fail(errTruncated)
		}
		return nil
	}
	hs := make([]Holder, n)
	for i := range hs {
		hs[i] = Holder{LeaseID: r.str(), ConsumerID: r.shared(), ConsumerName: r.shared(),
			AcquiredAt: r.time(), ExpiresAt: r.time(), Token: r.uvarint()}
	}
	return hs
}

func ptrTo[T any](v T) *T { return &v }
