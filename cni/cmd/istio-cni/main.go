// Command istio-cni is the mesh's chained CNI plugin. The node agent copies
// it into the node's CNI bin dir and appends it to the primary network's
// conflist; the container runtime runs it for every pod sandbox.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambient-mesh/mesh/cni/internal/plugin"
)

func main() {
	p := &plugin.Plugin{Stdout: os.Stdout, Stderr: os.Stderr}
	skel.PluginMainFuncs(p.Funcs(), version.All, "CNI plugin "+plugin.Name+" (ambient-mesh): enrolls pods through the node agent")
}
