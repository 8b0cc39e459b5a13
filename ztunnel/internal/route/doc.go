// Package route decides where ztunnel sends an outbound connection: the
// original destination of a captured connection, looked up in the mesh
// state, becomes an HBONE tunnel to a pod's 15008 (expecting its identity),
// a tunnel to a waypoint (with the original target as :authority), or plain
// TCP for destinations outside the mesh.
package route
