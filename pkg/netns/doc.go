// Package netns runs code inside Linux network namespaces. Sockets keep the
// namespace they were created in, so a component can listen and dial inside
// a pod's namespace from its own process: that is how ztunnel serves each
// pod in place, and how the node agent configures a pod's redirection.
package netns
