package zdsapi

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ambient-mesh/mesh/pkg/internal/wiretest"
)

// The numbers below are Istio's (public zds.proto): the wire contract with
// Istio's node agent and ztunnel. Change none of them.

func TestSchemaNumbers(t *testing.T) {
	wiretest.Numbers(t, (&ZdsHello{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"version": 1})
	wiretest.Numbers(t, (&WorkloadInfo{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"name": 1, "namespace": 2, "service_account": 3, "windows_namespace": 5,
	})
	wiretest.Numbers(t, (&WindowsNamespace{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"id": 1, "guid": 2,
	})
	wiretest.Numbers(t, (&AddWorkload{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"uid": 1, "workload_info": 2,
	})
	wiretest.Numbers(t, (&KeepWorkload{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"uid": 1})
	wiretest.Numbers(t, (&DelWorkload{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"uid": 2})
	wiretest.Numbers(t, (&SnapshotSent{}).ProtoReflect().Descriptor(), map[string]protowire.Number{})
	wiretest.Numbers(t, (&Ack{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"error": 1})
	wiretest.Numbers(t, (&WorkloadRequest{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"add": 1, "del": 2, "snapshot_sent": 3, "keep": 5,
	})
	wiretest.Numbers(t, (&WorkloadResponse{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"ack": 1})
	if Version_NOT_USED != 0 || Version_V1 != 1 {
		t.Error("Version values moved")
	}
}

func TestRequestsOnTheWire(t *testing.T) {
	add := wiretest.Marshal(t, &WorkloadRequest{Payload: &WorkloadRequest_Add{Add: &AddWorkload{
		Uid: "pod-uid",
		WorkloadInfo: &WorkloadInfo{
			Name: "p", Namespace: "ns", ServiceAccount: "sa",
			WindowsNamespace: &WindowsNamespace{Id: 7, Guid: "g"},
		},
	}}})
	a := wiretest.Bytes(t, add, 1)
	if got := string(wiretest.Bytes(t, a, 1)); got != "pod-uid" {
		t.Errorf("add(1).uid(1) = %q", got)
	}
	info := wiretest.Bytes(t, a, 2)
	for num, want := range map[protowire.Number]string{1: "p", 2: "ns", 3: "sa"} {
		if got := string(wiretest.Bytes(t, info, num)); got != want {
			t.Errorf("add.workload_info(2) field %d = %q, want %q", num, got, want)
		}
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, info, 5), 1); got != 7 {
		t.Errorf("workload_info.windows_namespace(5).id(1) = %d", got)
	}

	del := wiretest.Marshal(t, &WorkloadRequest{Payload: &WorkloadRequest_Del{Del: &DelWorkload{Uid: "pod-uid"}}})
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, del, 2), 2)); got != "pod-uid" {
		t.Errorf("del(2).uid(2) = %q", got)
	}
	keep := wiretest.Marshal(t, &WorkloadRequest{Payload: &WorkloadRequest_Keep{Keep: &KeepWorkload{Uid: "pod-uid"}}})
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, keep, 5), 1)); got != "pod-uid" {
		t.Errorf("keep(5).uid(1) = %q", got)
	}
	snap := wiretest.Marshal(t, &WorkloadRequest{Payload: &WorkloadRequest_SnapshotSent{SnapshotSent: &SnapshotSent{}}})
	if got := wiretest.Bytes(t, snap, 3); len(got) != 0 {
		t.Errorf("snapshot_sent(3) = %v, want empty message", got)
	}
}

func TestHelloAndAckOnTheWire(t *testing.T) {
	hello := wiretest.Marshal(t, &ZdsHello{Version: Version_V1})
	if got := wiretest.Varint(t, hello, 1); got != 1 {
		t.Errorf("version(1) = %d", got)
	}
	resp := wiretest.Marshal(t, &WorkloadResponse{Payload: &WorkloadResponse_Ack{Ack: &Ack{Error: "boom"}}})
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, resp, 1), 1)); got != "boom" {
		t.Errorf("ack(1).error(1) = %q", got)
	}
}
