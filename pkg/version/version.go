// Package version holds the project's version string, set at build time:
//
//	go build -ldflags "-X github.com/ambient-mesh/mesh/pkg/version.Version=1.2.3"
package version

// Version is the project version; "dev" for builds without -ldflags.
var Version = "dev"
