package framework

// Release is one Helm release of the mesh: the chart under charts/ and
// the release name Istio's Helm docs use for it.
type Release struct{ Name, Chart string }

// Releases are the mesh's releases in install order (the e2e suites and
// the demo install them so); uninstall takes the node agent first.
var Releases = []Release{{"istio-base", "base"}, {"istiod", "istiod"}, {"istio-cni", "cni"}, {"ztunnel", "ztunnel"}}
