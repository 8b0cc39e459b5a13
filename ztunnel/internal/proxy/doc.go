// Package proxy is ztunnel's data path: for every pod the node agent hands
// over by ZDS it opens the pod's listeners inside the pod's network namespace
// (15001 outbound, 15006 inbound plaintext, 15008 inbound HBONE), carries
// each connection, tracks it for the admin dump and drain, and reports it to
// the access log and metrics.
package proxy
