// Package charts holds the mesh's Helm charts, embedded so that istioctl
// installs exactly the charts of its own version.
package charts

import "embed"

// FS holds the charts, one directory each: base, istiod, cni, ztunnel.
//
//go:embed all:base all:istiod all:cni all:ztunnel
var FS embed.FS

// Order is the order the charts install in; uninstall goes in reverse.
var Order = []string{"base", "istiod", "cni", "ztunnel"}
