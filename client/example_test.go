package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/model"
)

// exampleURL is the embedded server the examples talk to; in a program it
// would be nats.DefaultURL or the deployment's URL.
var exampleURL string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pharox-client-example-")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		log.Fatal("embedded NATS server not ready")
	}
	exampleURL = srv.ClientURL()
	wnc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	w, err := workertest.New(context.Background(), wnc, workertest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if err := wnc.Flush(); err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	setup(nc)
	nc.Close()

	code := m.Run()
	w.Stop()
	wnc.Close()
	srv.Shutdown()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// setup creates the pools the examples use: "scrapers" with an AR and a BR
// proxy, "ar-only" with one AR proxy of max_concurrency 1.
func setup(nc *nats.Conn) {
	ctx := context.Background()
	c := client.New(nc)
	one := 1
	ar, br := "AR", "BR"
	for pool, proxies := range map[string][]model.ProxyInput{
		"scrapers": {{Host: "127.0.0.1", Port: 3128, Country: &ar, MaxConcurrency: &one},
			{Host: "127.0.0.1", Port: 1080, Protocol: ptr(model.ProtocolSOCKS5), Country: &br, Credentials: &model.Credentials{User: "bot", Password: "s3cret"}}},
		"ar-only": {{Host: "127.0.0.1", Port: 3128, Country: &ar, MaxConcurrency: &one}},
		"events":  {{Host: "127.0.0.1", Port: 3128}},
	} {
		if _, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: pool}); err != nil {
			log.Fatal(err)
		}
		if _, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: proxies}); err != nil {
			log.Fatal(err)
		}
	}
	// "feedback": two proxies; one failure rests a proxy for a minute.
	if _, err := c.CreatePool(ctx, model.PoolCreateRequest{Name: "feedback",
		Cooldown: &model.Cooldown{Failures: 1, Seconds: 60, MaxSeconds: 60}}); err != nil {
		log.Fatal(err)
	}
	if _, err := c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "feedback", Proxies: []model.ProxyInput{
		{Host: "127.0.0.1", Port: 3128}, {Host: "127.0.0.1", Port: 3129}}}); err != nil {
		log.Fatal(err)
	}
}

func scrape(ctx context.Context, proxyURL string) error {
	fmt.Println("scraping through", proxyURL)
	return nil
}

func ExampleClient_Acquire() {
	nc, err := nats.Connect(exampleURL) // nats.DefaultURL, or your deployment's
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	ctx := context.Background()

	consumer, seconds, country := "crawler-1", 60, "AR"
	lease, proxy, err := c.Acquire(ctx, model.AcquireRequest{
		PoolName:        "ar-only",
		ConsumerName:    &consumer,
		DurationSeconds: &seconds,
		Filters:         &model.ProxyFilters{Country: &country},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(lease.Status, proxy.URL)

	// The only AR proxy has max_concurrency 1: pharox's None.
	again, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "ar-only"})
	fmt.Println(again == nil, err)

	released, err := c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID, ConsumerName: &consumer})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(released.Status)
	// Output:
	// active http://127.0.0.1:3128
	// true <nil>
	// released
}

func ExampleClient_WithLease() {
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	ctx := context.Background()

	country := "BR"
	req := model.AcquireRequest{PoolName: "scrapers", Filters: &model.ProxyFilters{Country: &country}}
	err = c.WithLease(ctx, req, func(ctx context.Context, lease model.Lease, proxy model.Proxy) error {
		return scrape(ctx, proxy.URL) // released afterwards, also on error or panic
	})
	if errors.Is(err, client.ErrNoProxyAvailable) {
		fmt.Println("none free")
	} else if err != nil {
		log.Fatal(err)
	}
	// Output:
	// scraping through socks5://bot:s3cret@127.0.0.1:1080
}

func ExampleError() {
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)

	_, _, err = c.Acquire(context.Background(), model.AcquireRequest{PoolName: "latam"})
	fmt.Println(errors.Is(err, client.ErrPoolNotFound)) // or model.ErrPoolNotFound
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code)
		fmt.Println(e.Message)
	}
	// Output:
	// true
	// 404 pool_not_found
	// pool "latam" does not exist
}

func ExampleClient_SubscribeEvents() {
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	since := time.Now()
	lease, _, err := c.Acquire(ctx, model.AcquireRequest{PoolName: "events"})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Release(ctx, model.ReleaseRequest{LeaseID: lease.ID}); err != nil {
		log.Fatal(err)
	}

	// Replay what PHAROX_EVENTS kept since then, then go on live.
	got := make(chan client.Event, 16)
	sub, err := c.SubscribeEvents(ctx, func(ev client.Event) {
		if ev.PoolName() == "events" {
			got <- ev
		}
	}, client.WithReplaySince(since))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Stop()
	for range 2 {
		ev := <-got
		switch {
		case ev.Acquire != nil:
			fmt.Println(ev.Name, ev.Acquire.Lease.ID == lease.ID, ev.Acquire.PoolStats.TotalLeases)
		case ev.Release != nil:
			fmt.Println(ev.Name, ev.Release.Lease.Status, ev.Release.PoolStats.TotalLeases)
		}
	}
	// Output:
	// acquired true 1
	// released released 0
}

func ExampleClient_OnRelease() {
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the subscription

	// pharox's register_release_callback, over NATS: any worker's releases.
	done := make(chan struct{})
	_, err = c.OnRelease(ctx, func(ev model.ReleaseEvent) {
		if ev.PoolName == "ar-only" {
			fmt.Println("released", ev.Lease.ConsumerName, ev.Lease.Status)
			close(done)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	consumer := "cron"
	err = c.WithLease(ctx, model.AcquireRequest{PoolName: "ar-only", ConsumerName: &consumer},
		func(context.Context, model.Lease, model.Proxy) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	<-done
	// Output:
	// released cron released
}

// WithLease reports how the proxy did when it releases the lease: here a
// failure, which in a pool with a cooldown rests the proxy; the retry then
// gets another one.
func ExampleClient_AcquireWithRetry() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)

	req := model.AcquireRequest{PoolName: "feedback", Selector: ptr(model.SelectorLowestLatency)}
	var failed string
	err = c.WithLease(ctx, req, func(ctx context.Context, _ model.Lease, proxy model.Proxy) error {
		failed = proxy.ID
		return errors.New("target answered 403") // released with outcome failure
	})
	fmt.Println("fn:", err)
	p, err := c.GetProxy(ctx, failed)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("consecutive failures:", p.ConsecutiveFailures, "cooling:", p.CooldownUntil.After(time.Now()))

	lease, proxy, err := c.AcquireWithRetry(ctx, req, client.RetryAttempts(5))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("another proxy:", proxy.ID != failed)
	if _, err := c.Release(ctx, model.ReleaseSuccess(lease.ID)); err != nil {
		log.Fatal(err)
	}
	// Output:
	// fn: target answered 403
	// consecutive failures: 1 cooling: true
	// another proxy: true
}
