package ztunnel_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/meshlab"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// TestNodeLinkCarriesTLSNotPayload captures the node network while a client
// sends a distinctive payload to a server on the other node: between the
// nodes there is only TLS to the server's 15008, never the payload and
// never the app's port. As a control, the same client's plaintext to a pod
// outside the mesh is seen in clear by the same capture.
func TestNodeLinkCarriesTLSNotPayload(t *testing.T) {
	m := newMesh(t, standardPods)
	app := startApp(t, m, "server", 8080)
	const controlPort = 7070
	startApp(t, m, "outsider", controlPort)

	capture := startCapture(t, m.Topo.Node(1), "eth0")
	token, control := secret(), secret()
	payload := strings.Repeat(token, 512) // ~16 KiB, many segments
	mustExchange(t, m, "client", addr(m, "server", 8080), payload)
	if app.conns.Load() != 1 {
		t.Fatalf("app took %d connections, want 1", app.conns.Load())
	}
	mustExchange(t, m, "client", addr(m, "outsider", controlPort), control)
	capture.sync(t, m.Topo.Node(1), netip.AddrPortFrom(m.Topo.Node2IP, markerPort))
	raw, pkts := capture.stop(t)

	hbone := netip.AddrPortFrom(m.IP("server"), 15008)
	var toHBONE, fromHBONE, handshakes, appDataOut, appDataIn, bytesOut int
	controlSeen := false
	for _, p := range pkts {
		if p.src.Port() == markerPort || p.dst.Port() == markerPort {
			continue
		}
		if p.dst == netip.AddrPortFrom(m.IP("outsider"), controlPort) || p.src == netip.AddrPortFrom(m.IP("outsider"), controlPort) {
			controlSeen = controlSeen || bytes.Contains(p.payload, []byte(control))
			continue
		}
		if p.src.Port() == 8080 || p.dst.Port() == 8080 {
			t.Errorf("a packet of the app's port crossed the node link: %s -> %s", p.src, p.dst)
		}
		if bytes.Contains(p.payload, []byte(token)) {
			t.Errorf("the payload crossed the node link in clear: %s -> %s", p.src, p.dst)
		}
		switch {
		case p.dst == hbone && p.src.Addr() == m.IP("client"):
			toHBONE++
			bytesOut += len(p.payload)
			if bytes.HasPrefix(p.payload, []byte{0x16, 0x03}) {
				handshakes++
			}
			if bytes.Contains(p.payload, []byte{0x17, 0x03, 0x03}) {
				appDataOut++
			}
		case p.src == hbone && p.dst.Addr() == m.IP("client"):
			fromHBONE++
			if bytes.Contains(p.payload, []byte{0x17, 0x03, 0x03}) {
				appDataIn++
			}
		default:
			t.Errorf("unexpected packet on the node link: %s -> %s", p.src, p.dst)
		}
	}
	if bytes.Contains(raw, []byte(token)) {
		t.Error("the capture file holds the payload")
	}
	if !controlSeen {
		t.Error("the capture did not see the control payload sent in plaintext: it would not see a leak either")
	}
	t.Logf("captured %d packets: %d to %s (%d bytes, %d TLS handshake records, %d with application data), %d back (%d with application data)",
		len(pkts), toHBONE, hbone, bytesOut, handshakes, appDataOut, fromHBONE, appDataIn)
	if handshakes == 0 {
		t.Error("no TLS handshake record (0x16 0x03) from the client's pod to the server's 15008")
	}
	if appDataOut == 0 || appDataIn == 0 {
		t.Error("no TLS application data records (0x17 0x03 0x03) both ways")
	}
	if bytesOut < len(payload) {
		t.Errorf("only %d bytes went to %s, less than the %d byte payload: the capture missed the transfer", bytesOut, hbone, len(payload))
	}
}

// secret is a distinctive string to look for on the wire.
func secret() string {
	rnd := make([]byte, 8)
	_, _ = rand.Read(rnd)
	return "meshlab-secret-" + hex.EncodeToString(rnd) + ";"
}

// capture is tcpdump running in a namespace.
type capture struct {
	cmd  *exec.Cmd
	file string
	// done is closed once tcpdump has exited, with err its exit status and
	// stderr what it said.
	done   chan struct{}
	err    error
	stderr bytes.Buffer
}

// startCapture starts tcpdump on a link of a namespace and returns once it
// is capturing.
func startCapture(t *testing.T, ns netlab.Netns, link string) *capture {
	t.Helper()
	c := &capture{file: filepath.Join(t.TempDir(), "node.pcap"), done: make(chan struct{})}
	// -U writes each packet as it comes, -Z root keeps tcpdump from dropping
	// to a user that cannot write the test's directory.
	// --immediate-mode hands each packet to tcpdump as it comes rather than
	// in blocks.
	c.cmd = exec.Command("ip", "netns", "exec", ns.Name, "tcpdump", "-i", link, "-n", "-s", "0", "-U", "--immediate-mode", "-Z", "root", "-w", c.file, "tcp")
	pipe, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	listening := make(chan struct{})
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(pipe)
		seen := false
		for sc.Scan() {
			c.stderr.WriteString(sc.Text() + "\n")
			if !seen && strings.Contains(sc.Text(), "listening on") {
				seen = true
				close(listening)
			}
		}
		c.err = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	select {
	case <-listening:
	case <-c.done:
		t.Fatalf("tcpdump exited before capturing: %v\n%s", c.err, &c.stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("tcpdump not listening after 10s")
	}
	return c
}

// markerPort is where sync sends its marker, a port nothing listens on.
const markerPort = 9

// sync sends a marker connection attempt from ns to target, across the
// captured link, and waits until the file holds it: tcpdump writes packets
// in order, so everything sent before the marker is in the file too.
func (c *capture) sync(t *testing.T, ns netlab.Netns, target netip.AddrPort) {
	t.Helper()
	waitFor(t, 10*time.Second, "the capture's marker packet", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if conn, err := meshlab.Dial(ctx, ns, target.String()); err == nil {
			conn.Close()
		}
		raw, err := os.ReadFile(c.file)
		if err != nil {
			return err
		}
		pkts, err := parsePcap(raw)
		if err != nil {
			return err
		}
		for _, p := range pkts {
			if p.dst == target {
				return nil
			}
		}
		return fmt.Errorf("not in the %d packets captured so far", len(pkts))
	})
}

// stop interrupts tcpdump, waits for it to write out, and returns the file
// and its TCP packets.
func (c *capture) stop(t *testing.T) ([]byte, []packet) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		if c.err != nil {
			t.Fatalf("tcpdump: %v\n%s", c.err, &c.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("tcpdump did not stop on SIGINT")
	}
	raw, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := parsePcap(raw)
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	return raw, pkts
}

// packet is one captured TCP/IPv4 segment.
type packet struct {
	src, dst netip.AddrPort
	payload  []byte
}

// parsePcap reads a classic pcap file of Ethernet frames and returns its
// TCP over IPv4 segments.
func parsePcap(b []byte) ([]packet, error) {
	if len(b) < 24 {
		return nil, errors.New("pcap: short file header")
	}
	var bo binary.ByteOrder
	switch magic := binary.LittleEndian.Uint32(b); magic {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("pcap: magic %#x", magic)
	}
	if lt := bo.Uint32(b[20:]); lt != 1 {
		return nil, fmt.Errorf("pcap: link type %d, want Ethernet", lt)
	}
	var out []packet
	for rest := b[24:]; len(rest) > 0; {
		if len(rest) < 16 {
			return nil, errors.New("pcap: short record header")
		}
		n := int(bo.Uint32(rest[8:]))
		if len(rest) < 16+n {
			return nil, errors.New("pcap: short record")
		}
		frame := rest[16 : 16+n]
		rest = rest[16+n:]
		if p, ok := parseTCP(frame); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func parseTCP(frame []byte) (packet, bool) {
	if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return packet{}, false
	}
	ip := frame[14:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 6 {
		return packet{}, false
	}
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total > len(ip) || ihl > total {
		return packet{}, false
	}
	tcp := ip[ihl:total]
	if len(tcp) < 20 {
		return packet{}, false
	}
	off := int(tcp[12]>>4) * 4
	if off > len(tcp) {
		return packet{}, false
	}
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	return packet{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:])),
		payload: tcp[off:],
	}, true
}
