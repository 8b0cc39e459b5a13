// Package xdsgrpc opens Delta xDS streams with grpc-go, for programs that
// already link it (tests, benchmarks). ztunnel speaks the same method
// through pkg/rpc instead.
package xdsgrpc

import (
	"context"

	"google.golang.org/grpc"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// DeltaStream is the client side of one DeltaAggregatedResources stream.
type DeltaStream struct {
	s grpc.ClientStream
}

// OpenDelta opens a DeltaAggregatedResources stream on cc.
func OpenDelta(ctx context.Context, cc grpc.ClientConnInterface) (*DeltaStream, error) {
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	s, err := cc.NewStream(ctx, desc, xdsapi.DeltaADSMethod)
	if err != nil {
		return nil, err
	}
	return &DeltaStream{s: s}, nil
}

// Send sends a request.
func (d *DeltaStream) Send(req *xdsapi.DeltaDiscoveryRequest) error { return d.s.SendMsg(req) }

// Recv receives the next response.
func (d *DeltaStream) Recv() (*xdsapi.DeltaDiscoveryResponse, error) {
	resp := &xdsapi.DeltaDiscoveryResponse{}
	if err := d.s.RecvMsg(resp); err != nil {
		return nil, err
	}
	return resp, nil
}
