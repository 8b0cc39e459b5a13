// Package bpf holds the eBPF programs that redirect an enrolled pod's
// traffic to ztunnel inside the pod's network namespace (redirect.c), and
// their bpf2go-generated loaders. The generated Go and object files are
// committed, so building needs no clang; `make generate` rebuilds them.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -go-package bpf -output-stem redirect -tags linux -target bpfel,bpfeb Redirect redirect.c -- -I. -Wall -Werror
