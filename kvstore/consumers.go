package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
)

// EnsureConsumer returns the consumer named name, registering it on first
// use. Every worker gets the same id: the first Create wins and the others
// read it. Consumers never change once made, so a local cache is safe.
func (s *Store) EnsureConsumer(ctx context.Context, name string) (model.Consumer, error) {
	s.consumerMu.RLock()
	c, ok := s.consumerCache[name]
	s.consumerMu.RUnlock()
	if ok {
		return c, nil
	}
	c = model.Consumer{ID: uuid.NewString(), Name: name}
	data, _ := json.Marshal(c)
	_, err := s.consumers.Create(ctx, name, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		if _, err = s.getJSON(ctx, s.consumers, name, &c); err != nil {
			return model.Consumer{}, err
		}
	} else if err != nil {
		return model.Consumer{}, storeErr("create consumer", err)
	}
	s.consumerMu.Lock()
	s.consumerCache[name] = c
	s.consumerMu.Unlock()
	return c, nil
}

// ListConsumers lists every consumer by name.
func (s *Store) ListConsumers(ctx context.Context) ([]model.Consumer, error) {
	lister, err := s.consumers.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, storeErr("list consumers", err)
	}
	out := []model.Consumer{}
	if lister == nil {
		return out, nil
	}
	for key := range lister.Keys() {
		var c model.Consumer
		if _, err := s.getJSON(ctx, s.consumers, key, &c); err != nil {
			if errors.Is(err, errNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
