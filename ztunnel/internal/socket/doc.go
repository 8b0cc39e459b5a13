// Package socket holds ztunnel's socket options: reading the destination a
// connection had before the pod's redirection sent it to ztunnel, and
// marking ztunnel's own upstream sockets so the redirection lets them pass.
package socket
