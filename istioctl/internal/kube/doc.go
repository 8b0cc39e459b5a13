// Package kube holds istioctl's Kubernetes plumbing: the standard kube
// flags, clients built from them, and one-shot HTTP requests to a pod's
// localhost-only port through a port-forward.
package kube
