package ztunnel_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// TestPlaintextRelaysCarryEveryKindOfMessage: the TCP-to-TCP relays
// (passthrough to a pod outside the mesh, plaintext inbound from one)
// carry, on one connection and in order, requests, a bulk transfer, a
// message of exactly one relay buffer and requests again. ztunnel reads
// small messages itself and splices bulk in the kernel; every switch
// between the two happens here.
func TestPlaintextRelaysCarryEveryKindOfMessage(t *testing.T) {
	m := newMesh(t, standardPods)
	startApp(t, m, "outsider", 8080)
	startApp(t, m, "server", 8080)
	bulk := make([]byte, 4<<20)
	for i := range bulk {
		bulk[i] = byte(i % 251)
	}
	msgs := [][]byte{[]byte("GET / HTTP/1.1\n"), bulk, bytes.Repeat([]byte("x"), 16<<10), []byte("GET /again HTTP/1.1\n"), []byte("bye\n")}
	for _, c := range []struct {
		name, from, to, direction string
		node                      int
	}{
		{"passthrough", "client", "outsider", "via=passthrough", 1},
		{"plaintext inbound", "outsider", "server", "direction=inbound_plaintext", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := addr(m, c.to, 8080)
			if err := converse(m, c.from, target, msgs); err != nil {
				t.Fatalf("%s -> %s: %v", c.from, target, err)
			}
			var sent int
			for _, msg := range msgs {
				sent += len(msg)
			}
			// The access log counts what the relay carried each way.
			line := waitLog(t, m, c.node, "connection complete", c.direction, "dst="+target)
			if !strings.Contains(line, fmt.Sprintf("bytes_sent=%d", sent)) && !strings.Contains(line, fmt.Sprintf("bytes_received=%d", sent)) {
				t.Errorf("access log does not count the %d bytes each way:\n%s", sent, line)
			}
		})
	}
}

// converse dials target from pod, reads the app's greeting, then sends
// each message and reads it echoed back before the next.
func converse(m *meshlab.Mesh, pod, target string, msgs [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := meshlab.Dial(ctx, m.Topo.Pod(pod).NS, target)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := readLine(c); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	for i, msg := range msgs {
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(msg)
			werr <- err
		}()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("message %d (%d bytes): %w", i, len(msg), err)
		}
		if err := <-werr; err != nil {
			return fmt.Errorf("message %d: write: %w", i, err)
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("message %d (%d bytes) came back changed", i, len(msg))
		}
	}
	return nil
}
