// Package cluster brings up and tears down a real multi-node Kubernetes
// cluster on one Linux machine, with no container engine of its own: etcd and
// the control plane run as host processes, and each node is a network
// namespace plus a mount namespace running its own containerd, kubelet and
// kube-proxy. docs/architecture/cluster.md explains the layout and why.
package cluster
