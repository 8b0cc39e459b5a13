package kube

import (
	"testing"

	"go.uber.org/goleak"
)

// Port-forwards must not leave goroutines behind: each GET closes its
// websocket and the reader goroutine with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
