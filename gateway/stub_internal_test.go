package gateway

import (
	"context"
	"errors"

	"github.com/pharox/pharox-nats/model"
)

// stubLeaser is for tests of pure logic that never lease.
type stubLeaser struct{}

var errStub = errors.New("stub leaser")

func (stubLeaser) Acquire(context.Context, AcquireRequest) (*model.Lease, *model.Proxy, error) {
	return nil, nil, errStub
}
func (stubLeaser) Release(context.Context, ReleaseRequest) error { return errStub }
func (stubLeaser) Renew(context.Context, model.RenewRequest) (model.Lease, error) {
	return model.Lease{}, errStub
}
