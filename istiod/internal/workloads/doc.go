// Package workloads translates Kubernetes Pods, Services and EndpointSlices,
// Istio ServiceEntries and waypoint Gateways into the workload discovery
// resources (istio.workload.Address) that istiod pushes to ztunnel.
//
// The translation is pure: every function takes Kubernetes objects, what
// they refer to (Inputs) and the mesh settings, and returns protos, with no
// I/O, no caches and no clock, so a collection layer can recompute an output
// whenever one of its inputs changes and compare the result with what was
// pushed before. Output is deterministic for equal inputs; marshal with
// proto.MarshalOptions{Deterministic: true} to get stable bytes, because
// Workload.services is a map. Problems that degrade a translation without
// stopping it (a waypoint not ready yet, a bad ServiceEntry address) come
// back as errors naming the object and field, for the caller to log.
//
// The labels and field meanings follow Istio's ambient mode, so a user's
// existing Istio YAML enrols the same pods and selects the same waypoints:
//   - istio.io/use-waypoint (and istio.io/use-waypoint-namespace) on the
//     object, else on its namespace, names a Gateway; it is a waypoint when
//     its class is istio-waypoint and it has an address. Services use it
//     when its istio.io/waypoint-for is service (the default) or all,
//     workloads when it is workload or all.
//   - A service whose waypoint cannot be used yet points at the waypoint's
//     service name, which ztunnel cannot resolve, so its traffic is refused
//     rather than sent around the waypoint (see serviceWaypoint).
//   - A waypoint's own pods and Service (gateway.istio.io/managed:
//     istio.io-mesh-controller, or the gateway-name label of the waypoint)
//     never use a waypoint.
package workloads
