// Package install puts the chained plugin on a node: it copies the binary
// into the CNI bin dir and appends the plugin's entry to the primary
// network's config in the CNI net dir, the file a runtime picks (the
// lowest-sorted *.conf, *.conflist or *.json). A single-plugin .conf is
// turned into a .conflist, since only lists can chain.
//
// Watch keeps the entry there when the primary CNI rewrites its file.
// Uninstall takes it out again; the node agent calls it only when the mesh
// is being removed, never on a restart or upgrade, so pods keep failing
// closed while the agent is away instead of starting outside the mesh.
package install
