package xdsapi

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Our messages and Envoy's generated ones read each other's bytes: what
// ztunnel sends is what an Envoy-API control plane parses, and back.

func TestRequestReadsAsEnvoys(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"NODE_NAME": "node1"})
	ours := &DeltaDiscoveryRequest{
		Node:                     &Node{Id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local", Cluster: "Kubernetes", Metadata: md, UserAgentName: "ztunnel", UserAgentVersion: "dev", ClientFeatures: []string{"f"}},
		TypeUrl:                  "type.googleapis.com/istio.workload.Address",
		ResourceNamesSubscribe:   []string{"*"},
		ResourceNamesUnsubscribe: []string{"gone"},
		InitialResourceVersions:  map[string]string{"a": "1", "b": "2"},
		ResponseNonce:            "n7",
		ErrorDetail:              &Status{Code: 3, Message: "bad resource"},
	}
	b, err := proto.Marshal(ours)
	if err != nil {
		t.Fatal(err)
	}
	var env discovery.DeltaDiscoveryRequest
	if err := proto.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	want := &discovery.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: ours.Node.Id, Cluster: "Kubernetes", Metadata: md, UserAgentName: "ztunnel",
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "dev"}, ClientFeatures: []string{"f"}},
		TypeUrl:                  ours.TypeUrl,
		ResourceNamesSubscribe:   []string{"*"},
		ResourceNamesUnsubscribe: []string{"gone"},
		InitialResourceVersions:  map[string]string{"a": "1", "b": "2"},
		ResponseNonce:            "n7",
		ErrorDetail:              &status.Status{Code: 3, Message: "bad resource"},
	}
	if !proto.Equal(&env, want) {
		t.Fatalf("Envoy reads\n%v\nwant\n%v", &env, want)
	}
}

func TestEnvoyResponseReadsAsOurs(t *testing.T) {
	body, _ := anypb.New(wrapperspb.String("a workload"))
	env := &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: "42",
		Resources:         []*discovery.Resource{{Name: "Kubernetes//Pod/default/a", Version: "3", Resource: body, Aliases: []string{"x"}}},
		TypeUrl:           "type.googleapis.com/istio.workload.Address",
		RemovedResources:  []string{"Kubernetes//Pod/default/b"},
		Nonce:             "n8",
		ControlPlane:      &corev3.ControlPlane{Identifier: "istiod-1"},
	}
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	var ours DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	want := &DeltaDiscoveryResponse{
		SystemVersionInfo: "42",
		Resources:         []*Resource{{Name: "Kubernetes//Pod/default/a", Version: "3", Resource: body, Aliases: []string{"x"}}},
		TypeUrl:           env.TypeUrl,
		RemovedResources:  []string{"Kubernetes//Pod/default/b"},
		Nonce:             "n8",
	}
	// control_plane is not ours to read: it stays as an unknown field.
	ours.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(&ours, want) {
		t.Fatalf("we read\n%v\nwant\n%v", &ours, want)
	}
}
