// Package workloads translates Kubernetes Pods and Services into the workload
// discovery resources (istio.workload.Address) that istiod pushes to ztunnel.
//
// The translation is pure: every function takes Kubernetes objects and the
// mesh settings and returns a proto, with no I/O, no caches and no clock, so a
// collection layer can recompute an output whenever one of its inputs changes
// and compare the result with what was pushed before. Output is deterministic
// for equal inputs; marshal with proto.MarshalOptions{Deterministic: true} to
// get stable bytes, because Workload.services is a map.
//
// The labels and field meanings follow Istio's ambient mode, so a user's
// existing Istio YAML enrols the same pods and selects the same waypoints.
package workloads
