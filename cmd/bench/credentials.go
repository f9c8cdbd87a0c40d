package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// credentialsScenario is the number of the credentials-encryption scenario
// in --scenarios: what encrypting proxy credentials at rest costs per
// acquire+release pair, and rotating the key of a --big pool while
// clients lease from it.
const credentialsScenario = 10

// lastScenario is the highest scenario number --scenarios accepts.
const lastScenario = fanoutScenarioN

// standaloneOnly reports whether only scenarios that bring their own
// comparison (the gateway, credentials, observability) were asked for: the others'
// baseline is then not needed.
func standaloneOnly(cfg benchConfig) bool {
	for n := range cfg.scenarios {
		if n != gatewayScenario && n != credentialsScenario && n != observeScenario && n != clusterScenarioN && n != fanoutScenarioN {
			return false
		}
	}
	return true
}

func runCredentialsScenario(ctx context.Context, cfg benchConfig, rep *report) error {
	add := func(r row) {
		rep.Rows = append(rep.Rows, r)
		progress("  %s / %s: %.0f %s", r.Scenario, r.Case, r.Value, r.Unit)
	}
	const scn = "10 credentials"
	begun := time.Now()
	defer func() { rep.Seconds += time.Since(begun).Seconds() }()
	e, err := newEnv(ctx, cfg, 0)
	if err != nil {
		return err
	}
	defer e.close()
	ring := func(keys ...string) (*credkey.Ring, error) {
		list := ""
		for _, k := range keys {
			list += k + ","
		}
		return credkey.ParseList(list, "bench")
	}
	oldKey, err := credkey.Generate()
	if err != nil {
		return err
	}
	newKey, err := credkey.Generate()
	if err != nil {
		return err
	}
	oldRing, _ := ring(oldKey)
	rotated, _ := ring(newKey, oldKey)
	newOnly, _ := ring(newKey)

	withCreds := func(i int) model.ProxyInput {
		one := 1
		return model.ProxyInput{Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8000 + i%1000, MaxConcurrency: &one,
			Credentials: &model.Credentials{User: fmt.Sprintf("user%d", i), Password: fmt.Sprintf("pw-%08d", i)}}
	}

	// The cost of encryption: the same pairs on a 100-proxy pool whose
	// proxies all have credentials, by a worker without a key and by one
	// with a key, twice each, interleaved.
	progress("scenario %d: pairs with and without a credentials key, 100 proxies with credentials, 32 clients", credentialsScenario)
	rates := map[bool][]float64{}
	for round := 0; round < 2; round++ {
		for _, keyed := range []bool{false, true} {
			var keys *credkey.Ring
			if keyed {
				keys = oldRing
			}
			w, err := e.startKeyed(ctx, keys, false)
			if err != nil {
				return err
			}
			pool := fmt.Sprintf("creds-%v-%d-%s", keyed, round, e.suffix)
			if err := seedPool(e.client(), pool, 100, withCreds); err != nil {
				return err
			}
			pr := e.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
			e.stopKeyed(w)
			if pr.OverLease {
				rep.OverLease = true
			}
			name := map[bool]string{false: "no key (in clear)", true: "with a key (AES-256-GCM)"}[keyed]
			r := row{Scenario: scn, Case: fmt.Sprintf("%s, round %d", name, round+1), Value: pr.perSecond(), Unit: "pairs/s",
				P50Ms: float64(pr.P50) / 1e6, P99Ms: float64(pr.P99) / 1e6, CPU: pr.CPU.perOp(pr.Pairs), Note: fmt.Sprintf("%d pairs, %d errors", pr.Pairs, pr.Errors)}
			if keyed && len(rates[false]) > round {
				r.Ratio, r.RatioOf = pr.perSecond()/rates[false][round], "no key, same round"
			}
			add(r)
			rates[keyed] = append(rates[keyed], pr.perSecond())
		}
	}
	mean := func(v []float64) float64 { return (v[0] + v[1]) / 2 }
	add(row{Scenario: scn, Case: "with a key vs without, mean of 2 rounds", Value: mean(rates[true]), Unit: "pairs/s",
		Ratio: mean(rates[true]) / mean(rates[false]), RatioOf: "no key"})

	// Rotation: a --big pool sealed with the old key; one worker with
	// [new, old] serves 32 clients while worker rekey's work runs beside it.
	progress("scenario %d: key rotation of %d proxies under 32 clients", credentialsScenario, cfg.big)
	w, err := e.startKeyed(ctx, oldRing, false)
	if err != nil {
		return err
	}
	pool := fmt.Sprintf("rotate-%d-%s", cfg.big, e.suffix)
	if err := seedPool(e.client(), pool, cfg.big, withCreds); err != nil {
		return err
	}
	e.stopKeyed(w)
	if _, err := e.startKeyed(ctx, rotated, false); err != nil {
		return err
	}
	rk, err := e.startKeyed(ctx, rotated, true)
	if err != nil {
		return err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan pairRun, 1)
	go func() {
		loaded <- e.pairs(loadCtx, pairSpec{clients: 32, duration: time.Hour, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
	}()
	start := time.Now()
	last := start
	res, rerr := rk.Manager.RekeyCredentials(ctx, 32, func(done, total int) {
		if time.Since(last) >= 5*time.Second {
			last = time.Now()
			progress("  rekey: %d/%d", done, total)
		}
	})
	took := time.Since(start)
	stopLoad()
	pr := <-loaded
	e.stopKeyed(rk)
	if rerr != nil {
		return fmt.Errorf("rekey: %w", rerr)
	}
	if pr.OverLease {
		rep.OverLease = true
	}
	add(row{Scenario: scn, Case: fmt.Sprintf("rekey of every proxy (%d: the pool and the rounds' above), 32 clients leasing meanwhile", res.Proxies),
		Value: float64(took.Milliseconds()), Unit: "ms",
		Note: fmt.Sprintf("%d rewritten by the rekey (the rest by the clients' own writes), %d unreadable, %d passes, %.0f proxies/s",
			res.Rewritten, len(res.Unreadable), res.Passes, float64(res.Proxies)/took.Seconds())})
	add(row{Scenario: scn, Case: "pairs during the rotation", Value: pr.perSecond(), Unit: "pairs/s", P50Ms: float64(pr.P50) / 1e6, P99Ms: float64(pr.P99) / 1e6,
		Note: fmt.Sprintf("%d pairs, %d errors, %d empty", pr.Pairs, pr.Errors, pr.Empty)})
	rep.Targets = append(rep.Targets, target{Name: "acquires and releases failed during the key rotation (must be 0)", Measured: float64(pr.Errors), Needed: 0, Met: pr.Errors == 0})

	// Afterwards a worker with only the new key reads every proxy.
	check, err := e.startKeyed(ctx, newOnly, true)
	if err != nil {
		return err
	}
	unreadable := check.Store.UnreadableCredentials()
	again, err := check.Manager.RekeyCredentials(ctx, 32, nil)
	e.stopKeyed(check)
	if err != nil {
		return err
	}
	rep.Targets = append(rep.Targets, target{Name: "proxies the old key alone still seals after the rotation (must be 0)",
		Measured: float64(unreadable) + float64(again.Rewritten), Needed: 0, Met: unreadable == 0 && again.Rewritten == 0 && again.Current == res.Proxies})
	return nil
}

// startKeyed starts a worker with credentials keys on a connection of its
// own: a serving one (joined to e's workers, so e.close stops it), or a
// maintenance one (no broker: what worker rekey runs).
func (e *env) startKeyed(ctx context.Context, keys *credkey.Ring, maintenance bool) (*worker.Worker, error) {
	nc, err := nats.Connect(e.url)
	if err != nil {
		return nil, err
	}
	e.wconns = append(e.wconns, nc)
	cfg := benchWorker(nc, 10*time.Second)
	cfg.CredentialsKeys, cfg.Maintenance = keys, maintenance
	w, err := worker.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	e.workers = append(e.workers, w)
	return w, nil
}

// stopKeyed stops a worker startKeyed started.
func (e *env) stopKeyed(w *worker.Worker) {
	for i, x := range e.workers {
		if x == w {
			e.workers = append(e.workers[:i], e.workers[i+1:]...)
			break
		}
	}
	stopWorker(w)
}
