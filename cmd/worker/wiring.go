package main

import (
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/internal/worker"
)

// workerConfig is what the flags tell internal/worker.
func workerConfig(cfg config, nc, intake *nats.Conn, log *zap.Logger) worker.Config {
	return worker.Config{
		Conn:              nc,
		IntakeConn:        intake,
		Prefix:            cfg.SubjectPrefix,
		Replicas:          cfg.Replicas,
		Shards:            cfg.Shards,
		MaxInflight:       cfg.MaxInflight,
		RequestTimeout:    cfg.RequestTimeout,
		MaxDuration:       cfg.MaxDuration,
		LeaseRetention:    cfg.LeaseRetention,
		SweepInterval:     cfg.SweepInterval,
		ExpiryGrace:       cfg.ExpiryGrace,
		HealthConcurrency: cfg.HealthConcurrency,
		HealthSweeps:      cfg.HealthSweeps,
		SeedPath:          cfg.Seed,
		Log:               log,

		CredentialsKeys:      cfg.keys,
		MaxLeasesPerConsumer: cfg.MaxLeasesPerConsumer,
		MaxWaiters:           cfg.MaxWaiters,
	}
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.EncoderConfig.TimeKey = "time"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Sampling = nil
	return zc.Build()
}
