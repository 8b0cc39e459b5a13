package workloads

import (
	"net/netip"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// ResourceName is the delta xDS resource name of an Address: the uid for a
// workload, "namespace/hostname" for a service. It returns "" for an empty
// Address.
func ResourceName(addr *workloadapi.Address) string {
	if w := addr.GetWorkload(); w != nil {
		return w.GetUid()
	}
	if s := addr.GetService(); s != nil {
		return s.GetNamespace() + "/" + s.GetHostname()
	}
	return ""
}

// ipBytes returns the wire form of an IP: 4 bytes for IPv4 (including
// IPv4-mapped IPv6, which Kubernetes never means as IPv6) and 16 for IPv6.
// ok is false for strings that are not IPs, such as "None".
func ipBytes(s string) ([]byte, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return nil, false
	}
	return a.Unmap().AsSlice(), true
}
