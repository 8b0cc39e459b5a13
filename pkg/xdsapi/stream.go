package xdsapi

import (
	"context"

	"google.golang.org/grpc"
)

// DeltaADSMethod is the gRPC method of Envoy's aggregated discovery service
// for incremental (delta) xDS.
const DeltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// DeltaStream is the client side of one DeltaAggregatedResources stream.
type DeltaStream struct {
	s grpc.ClientStream
}

// OpenDelta opens a DeltaAggregatedResources stream on cc.
func OpenDelta(ctx context.Context, cc grpc.ClientConnInterface) (*DeltaStream, error) {
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	s, err := cc.NewStream(ctx, desc, DeltaADSMethod)
	if err != nil {
		return nil, err
	}
	return &DeltaStream{s: s}, nil
}

// Send sends a request.
func (d *DeltaStream) Send(req *DeltaDiscoveryRequest) error { return d.s.SendMsg(req) }

// Recv receives the next response.
func (d *DeltaStream) Recv() (*DeltaDiscoveryResponse, error) {
	resp := &DeltaDiscoveryResponse{}
	if err := d.s.RecvMsg(resp); err != nil {
		return nil, err
	}
	return resp, nil
}
