// Package record holds the values pharox keeps in its KV buckets for pools
// and proxies, and what every worker knows about them: a proxy's record is
// its attributes and its active leases (holders), so the one write that
// changes the holders is the write that commits a lease. kvstore writes these
// records; the replica indexes them; the manager decides their changes.
package record

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/model"
)

// Pool is the value of a pool's key in the pools bucket.
type Pool struct {
	ID          string             `json:"id"`
	Name        string             `json:"name"`
	Description *string            `json:"description"`
	HealthCheck *model.HealthCheck `json:"health_check"`
	Cooldown    *model.Cooldown    `json:"cooldown,omitempty"`
	// NextSeq hands out the added order of proxies: an add reserves a range
	// with one CAS on this record.
	NextSeq   uint64    `json:"next_seq"`
	CreatedAt time.Time `json:"created_at"`
	// Deleted marks a pool being deleted: from the moment this is written
	// the pool is gone for every reader and writer, while its proxies are
	// deleted behind it; a pool of the same name created meanwhile is a new
	// pool with a new id.
	Deleted bool `json:"deleted,omitempty"`
}

// Model returns the contract's view of the pool.
func (r *Pool) Model() model.ProxyPool {
	return model.ProxyPool{ID: r.ID, Name: r.Name, Description: r.Description, HealthCheck: r.HealthCheck, Cooldown: r.Cooldown}
}

// Holder is one lease counted against a proxy. The holders of a proxy live in
// the proxy's own record, so the write that adds a holder is the write that
// commits the lease (the shape of a counting semaphore: {limit, holders}).
type Holder struct {
	LeaseID      string    `json:"lease_id"`
	ConsumerID   string    `json:"consumer_id"`
	ConsumerName string    `json:"consumer_name"`
	AcquiredAt   time.Time `json:"acquired_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	// Token is the lease's fencing token: the revision of the write that
	// added this holder. That write cannot know its own revision, so it
	// leaves 0 and the next write of the record fills it in (see Seal): in
	// a record at revision r, a holder with no token was added at r.
	Token uint64 `json:"token,omitempty"`
}

// TokenAt returns h's fencing token as read from a record at rev.
func (h *Holder) TokenAt(rev uint64) uint64 {
	if h.Token == 0 {
		return rev
	}
	return h.Token
}

// Proxy is the value of a proxy's key in the proxies bucket: the proxy's
// attributes and its active holders. A record installed in a replica is
// never changed in place; every change makes a new one (Clone).
type Proxy struct {
	ID             string             `json:"id"`
	PoolID         string             `json:"pool_id"`
	PoolName       string             `json:"pool_name"`
	Seq            uint64             `json:"seq"`
	Host           string             `json:"host"`
	Port           int                `json:"port"`
	Protocol       model.Protocol     `json:"protocol"`
	Status         model.ProxyStatus  `json:"status"`
	CheckedAt      *time.Time         `json:"checked_at"`
	Credentials    *model.Credentials `json:"credentials"`
	Source         *string            `json:"source"`
	Country        *string            `json:"country"`
	City           *string            `json:"city"`
	Latitude       *float64           `json:"latitude"`
	Longitude      *float64           `json:"longitude"`
	ISP            *string            `json:"isp"`
	ASN            *int64             `json:"asn"`
	MaxConcurrency *int               `json:"max_concurrency"`
	Holders        []Holder           `json:"holders"`
	// The v1.1 feedback state lives in the record, so every worker sees it
	// through its replica and the write that frees a slot records it. A
	// record written before v1.1 has none of these keys: zero and nil.
	Health              *Health    `json:"health,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures,omitempty"`
	CooldownUntil       *time.Time `json:"cooldown_until,omitempty"`

	// sealed says how the stored version keeps Credentials: nil in clear
	// (or none), else sealed under a key (see Codec).
	sealed *sealState
}

// Health is the last health result recorded for a proxy (its proxy_id is
// the record's).
type Health struct {
	Status       model.ProxyStatus `json:"status"`
	LatencyMs    float64           `json:"latency_ms"`
	Protocol     model.Protocol    `json:"protocol"`
	Attempts     int               `json:"attempts"`
	StatusCode   *int              `json:"status_code,omitempty"`
	CheckedAt    time.Time         `json:"checked_at"`
	ErrorMessage *string           `json:"error_message,omitempty"`
}

// HealthOf keeps res as a record's last health result.
func HealthOf(res model.HealthCheckResult) *Health {
	return &Health{Status: res.Status, LatencyMs: res.LatencyMs, Protocol: res.Protocol, Attempts: res.Attempts,
		StatusCode: res.StatusCode, CheckedAt: res.CheckedAt.UTC(), ErrorMessage: res.ErrorMessage}
}

// LastHealth is the proxy's last health result, or nil.
func (r *Proxy) LastHealth() *model.HealthCheckResult {
	if r.Health == nil {
		return nil
	}
	h := r.Health
	return &model.HealthCheckResult{ProxyID: r.ID, Status: h.Status, LatencyMs: h.LatencyMs, Protocol: h.Protocol,
		Attempts: max(h.Attempts, 1), StatusCode: h.StatusCode, CheckedAt: h.CheckedAt, ErrorMessage: h.ErrorMessage}
}

// Latency is the latency of the last health result, if there is one.
func (r *Proxy) Latency() (float64, bool) {
	if r.Health == nil {
		return 0, false
	}
	return r.Health.LatencyMs, true
}

// Cooling reports whether the proxy is in cooldown at t.
func (r *Proxy) Cooling(t time.Time) bool {
	return r.CooldownUntil != nil && r.CooldownUntil.After(t)
}

// NewProxy is a new proxy of pool at added-order position seq.
func NewProxy(pool *Pool, seq uint64, in model.ProxyInput) *Proxy {
	rec := &Proxy{
		ID: uuid.NewString(), PoolID: pool.ID, PoolName: pool.Name, Seq: seq,
		Host: in.Host, Port: in.Port, Protocol: model.ProtocolHTTP, Status: model.ProxyActive,
		Credentials: in.Credentials, Source: in.Source, Country: in.Country, City: in.City,
		Latitude: in.Latitude, Longitude: in.Longitude, ISP: in.ISP, ASN: in.ASN,
		MaxConcurrency: in.MaxConcurrency, Holders: []Holder{},
	}
	if in.Protocol != nil {
		rec.Protocol = *in.Protocol
	}
	if in.Status != nil {
		rec.Status = *in.Status
	}
	return rec
}

// Encode is rec as written to the bucket by a worker without credentials
// keys (Codec.Encode with no key).
func Encode(rec *Proxy) []byte { return (&Codec{}).Encode(rec) }

// DecodeProxy reads a proxy record as a worker without credentials keys
// does (Codec.Decode with no key).
func DecodeProxy(data []byte) (*Proxy, error) { return (&Codec{}).Decode(data) }

// DecodePool reads a pool record.
func DecodePool(data []byte) (*Pool, error) {
	rec := new(Pool)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// LiveHolders counts holders whose lease has not expired at t.
func (r *Proxy) LiveHolders(t time.Time) int {
	n := 0
	for i := range r.Holders {
		if r.Holders[i].ExpiresAt.After(t) {
			n++
		}
	}
	return n
}

// HasRoom reports whether one more lease fits at t.
func (r *Proxy) HasRoom(t time.Time) bool {
	return r.MaxConcurrency == nil || r.LiveHolders(t) < *r.MaxConcurrency
}

// Model returns the contract's view of the proxy, leases judged at t.
func (r *Proxy) Model(t time.Time) model.Proxy {
	p := model.Proxy{
		ID: r.ID, PoolID: r.PoolID, PoolName: r.PoolName,
		Host: r.Host, Port: r.Port, Protocol: r.Protocol, Status: r.Status,
		CheckedAt: r.CheckedAt, Credentials: r.Credentials,
		Source: r.Source, Country: r.Country, City: r.City,
		Latitude: r.Latitude, Longitude: r.Longitude, ISP: r.ISP, ASN: r.ASN,
		MaxConcurrency: r.MaxConcurrency,
		CurrentLeases:  r.LiveHolders(t),
		URL:            model.ProxyURL(r.Protocol, r.Host, r.Port, r.Credentials),

		ConsecutiveFailures: r.ConsecutiveFailures,
	}
	if r.CooldownUntil != nil {
		t := *r.CooldownUntil
		p.CooldownUntil = &t
	}
	if lat, ok := r.Latency(); ok {
		p.LatencyMs = &lat
	}
	return p
}

// Attrs returns what filters look at.
func (r *Proxy) Attrs() model.Attrs {
	return model.Attrs{Protocol: r.Protocol, Source: r.Source, Country: r.Country, City: r.City, ISP: r.ISP, ASN: r.ASN, Latitude: r.Latitude, Longitude: r.Longitude}
}

// Clone copies r deeply enough that a change of the copy's holders leaves r
// untouched.
func (r *Proxy) Clone() *Proxy {
	c := *r
	c.Holders = append([]Holder(nil), r.Holders...)
	return &c
}

// Seal fills in the fencing token of the holders added by the write at rev,
// the revision this record was read at. Every write of a proxy record seals
// its base first, which keeps "no token means added at this revision" true.
func (r *Proxy) Seal(rev uint64) {
	for i := range r.Holders {
		if r.Holders[i].Token == 0 {
			r.Holders[i].Token = rev
		}
	}
}

// PruneExpired drops the holders expired at t and returns them.
func (r *Proxy) PruneExpired(t time.Time) []Holder {
	var expired []Holder
	kept := r.Holders[:0]
	for _, h := range r.Holders {
		if h.ExpiresAt.After(t) {
			kept = append(kept, h)
		} else {
			expired = append(expired, h)
		}
	}
	r.Holders = kept
	return expired
}

// Holder returns the index of leaseID's holder, or -1.
func (r *Proxy) Holder(leaseID string) int {
	for i := range r.Holders {
		if r.Holders[i].LeaseID == leaseID {
			return i
		}
	}
	return -1
}

// LeaseFor renders h, read from r at revision rev, as the contract's lease.
func (r *Proxy) LeaseFor(h Holder, rev uint64, status model.LeaseStatus) model.Lease {
	return model.Lease{
		ID: h.LeaseID, ProxyID: r.ID, PoolID: r.PoolID, PoolName: r.PoolName,
		ConsumerID: h.ConsumerID, ConsumerName: h.ConsumerName, Status: status,
		AcquiredAt: h.AcquiredAt, ExpiresAt: h.ExpiresAt, FencingToken: h.TokenAt(rev),
	}
}
