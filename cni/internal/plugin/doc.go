// Package plugin is the chained CNI plugin: it parses its own entry of the
// primary network's conflist, passes the earlier plugins' result through
// unchanged, and tells the node agent about pod sandboxes over
// cni/internal/agentapi.
//
// The plugin has no API server access. It skips namespaces it is told to
// exclude (and kube-system, always) without a call; every other pod goes to
// the agent, which knows the enrollment rules. ADD fails closed: when the
// agent is away or answers an error the sandbox is not created and the
// kubelet retries. DEL never fails for the agent's sake, or the kubelet
// would retry it forever.
package plugin
