package broker

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"
)

// The NATS micro protocol, answered by the broker itself.
//
// micro.AddService runs one handler call at a time per endpoint and counts a
// request's processing time and error only until its handler returns. The
// broker's handler only hands each request to its bounded pool (so one
// endpoint serves many requests at once), so micro would count no time and
// no error at all, and calling req.Error from the pool after the handler
// returned races with micro's read of it. So the broker subscribes its
// endpoints itself (queue group "q", as micro does) and answers the
// $SRV.PING, $SRV.INFO and $SRV.STATS subjects with micro's own types and
// response types: `nats micro ls/info/stats` work as with any micro
// service, and the numbers count what really happened, including the time
// a request spent waiting for a slot.

// ServiceName is the micro service name every worker announces.
const ServiceName = "pharox"

// service is the micro identity and the per-endpoint statistics.
type service struct {
	id      string
	started time.Time
	info    micro.Info // endpoints in order; never changes after Start

	mu    sync.Mutex
	stats map[string]*micro.EndpointStats // by endpoint subject
}

func newService(prefix string, eps []endpoint) *service {
	s := &service{id: nuid.Next(), started: time.Now().UTC(), stats: map[string]*micro.EndpointStats{}}
	s.info = micro.Info{
		ServiceIdentity: s.identity(prefix),
		Type:            micro.InfoResponseType,
		Description:     "pharox proxy leasing: acquire, release and administer proxy pools",
		Endpoints:       make([]micro.EndpointInfo, 0, len(eps)),
	}
	for _, ep := range eps {
		subject := prefix + "." + ep.subject
		s.info.Endpoints = append(s.info.Endpoints, micro.EndpointInfo{
			Name:       endpointName(ep.subject),
			Subject:    subject,
			QueueGroup: micro.DefaultQueueGroup,
			Metadata:   map[string]string{"request_schema": ep.schema + ".request", "max_body_bytes": fmt.Sprint(ep.limit)},
		})
		s.stats[subject] = &micro.EndpointStats{Name: endpointName(ep.subject), Subject: subject, QueueGroup: micro.DefaultQueueGroup}
	}
	return s
}

func (s *service) identity(prefix string) micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: ServiceName, ID: s.id, Version: Version, Metadata: map[string]string{"subject_prefix": prefix}}
}

// record counts one answered request of the endpoint on subject: its
// processing time and, for an error reply, the error as micro words it
// ("<status>:<message>").
func (s *service) record(subject string, took time.Duration, status int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats[subject]
	st.NumRequests++
	st.ProcessingTime += took
	st.AverageProcessingTime = st.ProcessingTime / time.Duration(st.NumRequests)
	if status != 0 {
		st.NumErrors++
		st.LastError = fmt.Sprintf("%d:%s", status, msg)
	}
}

// recordAsync counts an error NATS reported on the endpoint's subscription
// (requests dropped as a slow consumer), as micro does.
func (s *service) recordAsync(subject string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stats[subject]; st != nil {
		st.NumErrors++
		st.LastError = err.Error()
	}
}

// Info is the $SRV.INFO reply.
func (s *service) Info() micro.Info {
	info := s.info
	info.Metadata = maps.Clone(info.Metadata)
	info.Endpoints = append([]micro.EndpointInfo(nil), info.Endpoints...)
	return info
}

// Stats is the $SRV.STATS reply.
func (s *service) Stats() micro.Stats {
	st := micro.Stats{ServiceIdentity: s.info.ServiceIdentity, Type: micro.StatsResponseType, Started: s.started,
		Endpoints: make([]*micro.EndpointStats, 0, len(s.info.Endpoints))}
	st.Metadata = maps.Clone(st.Metadata)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.info.Endpoints {
		c := *s.stats[ep.Subject]
		st.Endpoints = append(st.Endpoints, &c)
	}
	return st
}

// subscribeControl answers PING, INFO and STATS on the three subjects micro
// uses for each: all services, services named pharox, this instance.
func (s *service) subscribeControl(nc *nats.Conn, log *zap.Logger) ([]*nats.Subscription, error) {
	ping := micro.Ping{ServiceIdentity: s.info.ServiceIdentity, Type: micro.PingResponseType}
	verbs := []struct {
		verb  micro.Verb
		reply func() any
	}{
		{micro.PingVerb, func() any { return ping }},
		{micro.InfoVerb, func() any { return s.Info() }},
		{micro.StatsVerb, func() any { return s.Stats() }},
	}
	var subs []*nats.Subscription
	for _, v := range verbs {
		for _, target := range [][2]string{{"", ""}, {ServiceName, ""}, {ServiceName, s.id}} {
			subject, err := micro.ControlSubject(v.verb, target[0], target[1])
			if err != nil {
				return subs, err
			}
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
				data, _ := json.Marshal(v.reply())
				if err := m.Respond(data); err != nil {
					log.Warn("service control reply not sent", zap.String("subject", m.Subject), zap.Error(err))
				}
			})
			if err != nil {
				return subs, fmt.Errorf("subscribe %s: %w", subject, err)
			}
			subs = append(subs, sub)
		}
	}
	return subs, nil
}
