package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// ContractV11 says whether the workers implement contract v1.1 (release
// outcome and reason, acquire exclude_proxy_ids, the protocol filter;
// cooldowns follow from outcomes). It is the one switch for everything the
// gateway does with v1.1: while it is false, ClientLeaser leaves the v1.1
// fields out of every request, because a v1 worker refuses unknown fields
// with 400, and refuses a protocol filter itself (dropping it would lease a
// proxy of any protocol). Set it to true once the workers answer $SRV.INFO
// with version 1.1.0 or later.
const ContractV11 = true

// ErrNeedsV11 is a request the gateway can only make of v1.1 workers.
var ErrNeedsV11 = errors.New("needs pharox workers that implement contract v1.1")

// Outcome says how a lease's use went, reported on release (contract v1.1).
type Outcome string

const (
	// OutcomeNone reports nothing (a use the client cut short).
	OutcomeNone    Outcome = ""
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// AcquireRequest is pharox.acquire with the v1.1 fields the gateway uses.
type AcquireRequest struct {
	model.AcquireRequest
	// Protocols is v1.1's protocol filter: the proxy's protocol must be one
	// of them (none: any).
	Protocols []model.Protocol
	// ExcludeProxyIDs is v1.1's exclude_proxy_ids: proxies never chosen.
	ExcludeProxyIDs []string
}

// ReleaseRequest is pharox.release with v1.1's outcome and reason.
type ReleaseRequest struct {
	model.ReleaseRequest
	Outcome Outcome
	Reason  string // at most 1024 code points; only with an outcome
}

// Leaser is what the gateway needs of the workers. Acquire returns nil,
// nil, nil when no eligible proxy is free.
type Leaser interface {
	Acquire(ctx context.Context, req AcquireRequest) (*model.Lease, *model.Proxy, error)
	Release(ctx context.Context, req ReleaseRequest) error
	Renew(ctx context.Context, req model.RenewRequest) (model.Lease, error)
}

// ClientLeaser is the Leaser over the workers' NATS contract.
type ClientLeaser struct {
	c   *client.Client
	v11 bool
}

// LeaserOption configures NewClientLeaser.
type LeaserOption func(*ClientLeaser)

// WithContractV11 overrides ContractV11 for this leaser (tests of the v1.1
// wire form).
func WithContractV11(on bool) LeaserOption { return func(l *ClientLeaser) { l.v11 = on } }

// NewClientLeaser returns a Leaser that sends the contract's requests with c.
func NewClientLeaser(c *client.Client, opts ...LeaserOption) *ClientLeaser {
	l := &ClientLeaser{c: c, v11: ContractV11}
	for _, o := range opts {
		o(l)
	}
	return l
}

// The request bodies: the v1 fields from model, the v1.1 fields beside
// them. A field of the outer struct hides an embedded one of the same JSON
// name, so these stay right once model gains the v1.1 fields too.
type acquireBody struct {
	model.AcquireRequest
	Filters         *filtersBody `json:"filters,omitempty"`
	ExcludeProxyIDs []string     `json:"exclude_proxy_ids,omitempty"`
}

type filtersBody struct {
	model.ProxyFilters
	Protocol []model.Protocol `json:"protocol,omitempty"`
}

type releaseBody struct {
	model.ReleaseRequest
	Outcome Outcome `json:"outcome,omitempty"`
	Reason  *string `json:"reason,omitempty"`
}

// maxReason is v1.1's bound on a release reason, in code points.
const maxReason = 1024

// Acquire implements Leaser.
func (l *ClientLeaser) Acquire(ctx context.Context, req AcquireRequest) (*model.Lease, *model.Proxy, error) {
	body := acquireBody{AcquireRequest: req.AcquireRequest}
	if req.Filters != nil || len(req.Protocols) > 0 {
		body.Filters = &filtersBody{}
		if req.Filters != nil {
			body.Filters.ProxyFilters = *req.Filters
		}
	}
	if len(req.Protocols) > 0 {
		if !l.v11 {
			return nil, nil, fmt.Errorf("the protocol filter %w", ErrNeedsV11)
		}
		body.Filters.Protocol = req.Protocols
	}
	if l.v11 {
		body.ExcludeProxyIDs = req.ExcludeProxyIDs
	}
	var extra time.Duration
	if w := req.WaitSeconds; w != nil && *w > 0 {
		extra = time.Duration(*w * float64(time.Second))
	}
	var reply model.AcquireReply
	if err := l.c.Call(ctx, "acquire", body, &reply, extra); err != nil {
		return nil, nil, err
	}
	if reply.Lease == nil || reply.Proxy == nil {
		return nil, nil, nil
	}
	return reply.Lease, reply.Proxy, nil
}

// Release implements Leaser.
func (l *ClientLeaser) Release(ctx context.Context, req ReleaseRequest) error {
	body := releaseBody{ReleaseRequest: req.ReleaseRequest}
	if l.v11 && req.Outcome != OutcomeNone {
		body.Outcome = req.Outcome
		if req.Reason != "" {
			r := []rune(req.Reason)
			if len(r) > maxReason {
				r = r[:maxReason]
			}
			s := string(r)
			body.Reason = &s
		}
	}
	return l.c.Call(ctx, "release", body, nil, 0)
}

// Renew implements Leaser.
func (l *ClientLeaser) Renew(ctx context.Context, req model.RenewRequest) (model.Lease, error) {
	var reply model.LeaseReply
	if err := l.c.Call(ctx, "renew", req, &reply, 0); err != nil {
		return model.Lease{}, err
	}
	if reply.Lease == nil {
		return model.Lease{}, errors.New("pharox renew: reply has no lease")
	}
	return *reply.Lease, nil
}
