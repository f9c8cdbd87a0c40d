package events

// PublishFailures is the number of event publishes that failed (each
// failed attempt of an event that is retried until the stream stores it),
// for metrics.
func (p *Publisher) PublishFailures() uint64 { return p.failures.Load() }
