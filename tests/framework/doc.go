// Package framework holds the helpers of the end-to-end tests: it finds the
// local cluster (or brings one up), creates namespaces that clean up after
// themselves, applies YAML, waits for rollouts, runs commands in pods through
// the real exec path, and on failure prints what a person needs to debug.
//
// The manifests of the test apps build without the e2e tag, so the demo
// can use them too; everything that drives a cluster needs the tag.
package framework
