// Package state is ztunnel's view of the mesh, built from the resources
// istiod sends over workload xDS: workloads and services (istio.workload.
// Address) indexed by address, and authorization policies (istio.security.
// Authorization) compiled once. Updates are deltas; a resource that fails
// validation is rejected with an error naming it and its field, and the
// previous version of that resource, and every other resource, stays.
package state
