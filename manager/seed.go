package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// SeedFile is the shape of a --seed file: pools with their proxies.
type SeedFile struct {
	Pools []SeedPool `json:"pools"`
}

// SeedPool is one pool of a seed file.
type SeedPool struct {
	Name        string             `json:"name"`
	Description *string            `json:"description,omitempty"`
	HealthCheck *model.HealthCheck `json:"health_check,omitempty"`
	Cooldown    *model.Cooldown    `json:"cooldown,omitempty"`
	Proxies     []model.ProxyInput `json:"proxies"`
}

// SeedResult counts what a seed run created.
type SeedResult struct {
	PoolsCreated   int
	ProxiesAdded   int
	ProxiesPresent int
}

// LoadSeedFile reads and decodes a seed file, refusing unknown fields.
func LoadSeedFile(path string) (SeedFile, error) {
	var f SeedFile
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("read seed file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf("seed file %s: %w", path, err)
	}
	return f, nil
}

// Seed creates the pools and proxies of f that do not exist yet, so running
// it on every start (or from several workers) adds each once. A proxy is
// already there when its pool has one with the same protocol, host and port.
func (m *Manager) Seed(ctx context.Context, f SeedFile) (SeedResult, error) {
	var res SeedResult
	for _, p := range f.Pools {
		_, err := m.CreatePool(ctx, model.PoolCreateRequest{Name: p.Name, Description: p.Description})
		switch {
		case err == nil:
			res.PoolsCreated++
		case !errors.Is(err, model.ErrConflict):
			return res, fmt.Errorf("seed pool %q: %w", p.Name, err)
		}
		if p.HealthCheck != nil || p.Cooldown != nil {
			upd := model.PoolUpdateRequest{Name: p.Name}
			if p.HealthCheck != nil {
				upd.HealthCheck = model.Some(*p.HealthCheck)
			}
			if p.Cooldown != nil {
				upd.Cooldown = model.Some(*p.Cooldown)
			}
			if _, err := m.UpdatePool(ctx, upd); err != nil {
				return res, fmt.Errorf("seed pool %q settings: %w", p.Name, err)
			}
		}
		present := map[string]bool{}
		limit := model.MaxListLimit
		var cursor *string
		for {
			page, err := m.ListProxies(ctx, model.ProxiesListRequest{PoolName: p.Name, Limit: &limit, Cursor: cursor})
			if err != nil {
				return res, fmt.Errorf("seed pool %q: %w", p.Name, err)
			}
			for _, px := range page.Proxies {
				present[proxyKey(px.Protocol, px.Host, px.Port)] = true
			}
			if page.NextCursor == nil {
				break
			}
			cursor = page.NextCursor
		}
		var missing []model.ProxyInput
		for _, in := range p.Proxies {
			proto := model.ProtocolHTTP
			if in.Protocol != nil {
				proto = *in.Protocol
			}
			k := proxyKey(proto, in.Host, in.Port)
			if present[k] {
				res.ProxiesPresent++
				continue
			}
			present[k] = true
			missing = append(missing, in)
		}
		for len(missing) > 0 {
			n := min(len(missing), model.MaxProxiesPerAdd)
			added, err := m.AddProxies(ctx, model.ProxiesAddRequest{PoolName: p.Name, Proxies: missing[:n]})
			if err != nil {
				return res, fmt.Errorf("seed pool %q proxies: %w", p.Name, err)
			}
			res.ProxiesAdded += len(added)
			missing = missing[n:]
		}
	}
	m.log.Info("seed applied", zap.Int("pools_created", res.PoolsCreated),
		zap.Int("proxies_added", res.ProxiesAdded), zap.Int("proxies_present", res.ProxiesPresent))
	return res, nil
}

func proxyKey(p model.Protocol, host string, port int) string {
	return string(p) + "://" + host + ":" + strconv.Itoa(port)
}
