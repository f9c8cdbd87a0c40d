package broker

import (
	"context"
	"strings"
	"time"

	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/tracing"
)

// endpoint is one operation of the contract.
type endpoint struct {
	subject string
	schema  string
	limit   int
	call    func(ctx context.Context, body []byte) (any, error)
}

// endpoints lists every operation served, under the subject prefix.
func (b *Broker) endpoints() []endpoint {
	m := b.m
	return []endpoint{
		op("acquire", "acquire", func(ctx context.Context, r model.AcquireRequest) (any, error) {
			if r.WaitSeconds != nil && *r.WaitSeconds > 0 && *r.WaitSeconds <= model.MaxWaitSeconds {
				// A waiting acquire's deadline is its wait plus the usual one.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), b.opts.timeout+time.Duration(*r.WaitSeconds*float64(time.Second)))
				defer cancel()
			}
			lease, proxy, err := m.AcquireProxy(ctx, r, manager.ParkWith(slot{b}))
			return model.AcquireReply{Lease: lease, Proxy: proxy}, err
		}),
		op("release", "release", func(ctx context.Context, r model.ReleaseRequest) (any, error) {
			lease, err := m.ReleaseProxy(ctx, r)
			return model.LeaseReply{Lease: &lease}, err
		}),
		op("renew", "renew", func(ctx context.Context, r model.RenewRequest) (any, error) {
			lease, err := m.RenewLease(ctx, r)
			return model.LeaseReply{Lease: &lease}, err
		}),
		op("leases.get", "leases_get", func(ctx context.Context, r model.LeaseGetRequest) (any, error) {
			lease, err := m.GetLease(ctx, r.LeaseID)
			return model.LeaseReply{Lease: &lease}, err
		}),
		op("cleanup", "cleanup", func(ctx context.Context, _ model.EmptyRequest) (any, error) {
			n, err := m.CleanupExpiredLeases(ctx)
			return model.CleanupReply{Released: n}, err
		}),
		op("stats", "stats", func(ctx context.Context, r model.StatsRequest) (any, error) {
			return m.PoolStats(ctx, r.PoolName)
		}),
		op("admin.pools.create", "pools_create", func(ctx context.Context, r model.PoolCreateRequest) (any, error) {
			return m.CreatePool(ctx, r)
		}),
		op("admin.pools.list", "pools_list", func(ctx context.Context, _ model.EmptyRequest) (any, error) {
			pools, err := m.ListPools(ctx)
			return model.PoolsReply{Pools: pools}, err
		}),
		op("admin.pools.update", "pools_update", func(ctx context.Context, r model.PoolUpdateRequest) (any, error) {
			return m.UpdatePool(ctx, r)
		}),
		op("admin.pools.delete", "pools_delete", func(ctx context.Context, r model.PoolDeleteRequest) (any, error) {
			return model.DeletedReply{Deleted: true}, m.DeletePool(ctx, r)
		}),
		withLimit(MaxProxiesBody, op("admin.proxies.add", "proxies_add", func(ctx context.Context, r model.ProxiesAddRequest) (any, error) {
			proxies, err := m.AddProxies(ctx, r)
			return model.ProxiesReply{Proxies: proxies}, err
		})),
		op("admin.proxies.list", "proxies_list", func(ctx context.Context, r model.ProxiesListRequest) (any, error) {
			return m.ListProxies(ctx, r)
		}),
		op("admin.proxies.get", "proxies_get", func(ctx context.Context, r model.ProxyGetRequest) (any, error) {
			return m.GetProxy(ctx, r.ProxyID)
		}),
		op("admin.proxies.update", "proxies_update", func(ctx context.Context, r model.ProxyUpdateRequest) (any, error) {
			return m.UpdateProxy(ctx, r)
		}),
		op("admin.proxies.delete", "proxies_delete", func(ctx context.Context, r model.ProxyDeleteRequest) (any, error) {
			return model.DeletedReply{Deleted: true}, m.DeleteProxy(ctx, r)
		}),
		op("admin.consumers.ensure", "consumers_ensure", func(ctx context.Context, r model.ConsumerEnsureRequest) (any, error) {
			return m.EnsureConsumer(ctx, r.Name)
		}),
		op("admin.consumers.list", "consumers_list", func(ctx context.Context, _ model.EmptyRequest) (any, error) {
			consumers, err := m.ListConsumers(ctx)
			return model.ConsumersReply{Consumers: consumers}, err
		}),
		op("admin.health.apply", "health_apply", func(ctx context.Context, r model.HealthApplyRequest) (any, error) {
			return m.ApplyHealthResult(ctx, r)
		}),
		op("admin.health.check", "health_check", b.checkHealth),
		op("admin.health.last", "health_last", func(ctx context.Context, r model.HealthLastRequest) (any, error) {
			res, err := m.LastHealth(ctx, r.ProxyID)
			return model.HealthLastReply{Result: res}, err
		}),
	}
}

// op builds an endpoint that decodes its body into Req before calling fn.
func op[Req any](subject, schema string, fn func(context.Context, Req) (any, error)) endpoint {
	return endpoint{subject: subject, schema: schema, limit: MaxBody, call: func(ctx context.Context, body []byte) (any, error) {
		_, span := tracing.Start(ctx, "pharox.decode")
		req, err := Decode[Req](body)
		span.End()
		if err != nil {
			return nil, err
		}
		return fn(ctx, req)
	}}
}

func withLimit(limit int, ep endpoint) endpoint {
	ep.limit = limit
	return ep
}

// endpointName turns a subject suffix into a micro endpoint name, which may
// not contain dots: admin.pools.create -> admin-pools-create.
func endpointName(subject string) string { return strings.ReplaceAll(subject, ".", "-") }
