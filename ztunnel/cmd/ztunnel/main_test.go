package main

import (
	"strings"
	"testing"
)

func TestPoolMaxStreamsPerConnection(t *testing.T) {
	base := []string{"-node-name", "n1"}
	o, err := parseFlags(base)
	if err != nil || o.maxStreamsPerConn != 100 {
		t.Fatalf("default: %v, %v; want 100 as Istio's ztunnel", o, err)
	}
	t.Setenv("POOL_MAX_STREAMS_PER_CONNECTION", "8")
	if o, err = parseFlags(base); err != nil || o.maxStreamsPerConn != 8 {
		t.Fatalf("from the environment: %v, %v; want 8", o, err)
	}
	if o, err = parseFlags(append(base, "-pool-max-streams-per-connection", "1")); err != nil || o.maxStreamsPerConn != 1 {
		t.Fatalf("flag over the environment: %v, %v; want 1", o, err)
	}
	for _, bad := range []string{"0", "101", "many"} {
		_, err := parseFlags(append(base, "-pool-max-streams-per-connection", bad))
		if err == nil || !strings.Contains(err.Error(), "POOL_MAX_STREAMS_PER_CONNECTION") {
			t.Errorf("%q: err = %v, want one naming the setting", bad, err)
		}
	}
}
