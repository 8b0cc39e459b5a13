package charts

// The base chart's CRDs come from the modules that publish them, at the
// versions go.mod requires.
//go:generate go run ./internal/crdgen -out base/files
