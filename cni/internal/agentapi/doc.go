// Package agentapi is the contract between the chained CNI plugin and the
// node agent: JSON over HTTP on a unix socket that only root can reach.
//
// The plugin calls POST /cmdadd for every pod it does not exclude itself; the
// node agent decides whether the pod is enrolled, configures redirection in
// the pod's network namespace, hands the namespace to ztunnel over ZDS and
// answers only once ztunnel acked. POST /cmddel tells the agent a sandbox went
// away (best effort), and GET /status answers the runtime's STATUS question.
//
// The add request keeps the shape of Istio's plugin event (same path, socket
// name and field names), so either side can talk to Istio's counterpart.
package agentapi
