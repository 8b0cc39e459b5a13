// Package install installs, upgrades and removes the mesh's charts as Helm
// releases, and waits for what they deploy to become ready (or to go).
package install
