package redirect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	vnetlink "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/bpf"
	"github.com/ambient-mesh/mesh/pkg/netns"
)

// Verdict indices, as enum verdict in bpf/redirect.c.
const (
	vOther = iota
	vMarked
	vLocalhost
	vHBONE
	vProbe
	vConnected
	vReply
	vLooped
	vAssigned
	vNoListener
	vAssignError
	vDNSAnswer
	vMax
)

var verdictNames = [vMax]string{"other", "marked", "localhost", "hbone", "probe", "connected", "reply", "looped", "assigned", "no-listener", "assign-error", "dns-answer"}

// tc return codes.
const (
	actUnspec   = -1
	actOK       = 0
	actShot     = 2
	actRedirect = 7
)

// skbCtx is the head of struct __sk_buff that BPF_PROG_TEST_RUN takes as
// context: only mark is set.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("BPF_PROG_TEST_RUN and network namespaces need root")
	}
}

// NeedEBPF skips a test without root or on a kernel older than 5.7 (no
// bpf_sk_assign from tc), and fails it when a newer kernel still cannot
// run the mode, so that a broken mode never hides behind a skip.
func NeedEBPF(t testing.TB) {
	t.Helper()
	needRoot(t)
	if !kernelAtLeast(t, 5, 7) {
		t.Skip("the eBPF mode needs Linux 5.7 or later")
	}
	if err := ProbeEBPF(); err != nil {
		t.Fatalf("eBPF mode unavailable on a kernel that should run it: %v", err)
	}
}

func kernelAtLeast(t testing.TB, major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var maj, min int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &min); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return maj > major || (maj == major && min >= minor)
}

// progLab is a fresh network namespace, with lo up, in which programs are
// run so that their socket lookups see only the sockets a test opens.
type progLab struct {
	t    *testing.T
	ns   *netns.NS
	objs *bpf.RedirectObjects
}

func newProgLab(t *testing.T, cfg Config) *progLab {
	NeedEBPF(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	err = ns.Do(func() error {
		lo, err := vnetlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return vnetlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := loadPrograms(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	return &progLab{t: t, ns: ns, objs: objs}
}

// listen opens a socket in the lab's namespace, as ztunnel would in a
// pod's: TCP listeners with IP_TRANSPARENT, or a bound UDP socket.
func (l *progLab) listen(network string, port int) func() {
	l.t.Helper()
	var closeFn func()
	err := l.ns.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		addr := netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)).String()
		if network == "udp4" {
			pc, err := lc.ListenPacket(context.Background(), network, addr)
			if err != nil {
				return err
			}
			closeFn = func() { pc.Close() }
			return nil
		}
		ln, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			return err
		}
		closeFn = func() { ln.Close() }
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(closeFn)
	return closeFn
}

// connection opens a loopback connection in the lab's namespace and
// returns the accepted side's address and the dialer's: a packet from
// dialer to accepted belongs to a connection a local socket holds.
func (l *progLab) connection() (accepted, dialer netip.AddrPort) {
	l.t.Helper()
	err := l.ns.Do(func() error {
		ln, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		l.t.Cleanup(func() { ln.Close() })
		port := ln.Addr().(*net.TCPAddr).Port
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
		c, err := d.Dial("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(port)).String())
		if err != nil {
			return err
		}
		l.t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			return err
		}
		l.t.Cleanup(func() { s.Close() })
		accepted = s.LocalAddr().(*net.TCPAddr).AddrPort()
		dialer = c.LocalAddr().(*net.TCPAddr).AddrPort()
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return accepted, dialer
}

type result struct {
	ret     int32
	mark    uint32
	verdict int // the one counter that moved, or -1
	out     []byte
}

func (l *progLab) run(t *testing.T, prog *ebpf.Program, pkt []byte, mark uint32) result {
	t.Helper()
	var before, after [vMax]uint64
	if err := l.objs.Verdicts.Get(&before); err != nil {
		t.Fatal(err)
	}
	in := skbCtx{Mark: mark}
	// The kernel writes the whole struct __sk_buff back.
	var out [256]byte
	data := make([]byte, len(pkt)+256)
	var ret uint32
	err := l.ns.Do(func() error {
		var err error
		ret, err = prog.Run(&ebpf.RunOptions{Data: pkt, DataOut: data, Context: in, ContextOut: &out})
		return err
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("BPF_PROG_TEST_RUN for tc programs: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := l.objs.Verdicts.Get(&after); err != nil {
		t.Fatal(err)
	}
	r := result{ret: int32(ret), mark: binary.NativeEndian.Uint32(out[8:]), verdict: -1, out: data[:len(pkt)]}
	for i := range after {
		if after[i] != before[i] {
			if r.verdict != -1 {
				t.Fatalf("two verdicts counted: %s and %s", verdictNames[r.verdict], verdictNames[i])
			}
			r.verdict = i
		}
	}
	return r
}

// packet builds an Ethernet frame carrying IPv4 TCP (with flags) or UDP.
type packet struct {
	src, dst netip.AddrPort
	udp      bool
	flags    uint8
}

const (
	synFlag = 0x02
	ackFlag = 0x10
	rstFlag = 0x04
)

func (p packet) bytes() []byte {
	proto, l4len := byte(unix.IPPROTO_TCP), 20
	if p.udp {
		proto, l4len = unix.IPPROTO_UDP, 8
	}
	b := make([]byte, 14+20+l4len)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0x01})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0x02})
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+l4len))
	ip[8] = 64
	ip[9] = proto
	src, dst := p.src.Addr().As4(), p.dst.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	l4 := ip[20:]
	binary.BigEndian.PutUint16(l4[0:], p.src.Port())
	binary.BigEndian.PutUint16(l4[2:], p.dst.Port())
	if p.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
	} else {
		l4[12] = 5 << 4
		l4[13] = p.flags
	}
	return b
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var (
	podAddr    = ap("10.1.0.5:41000")
	remoteHTTP = ap("10.2.0.9:80")
	remoteDNS  = ap("10.96.0.10:53")
)

func TestProgramsPodEgress(t *testing.T) {
	l := newProgLab(t, Config{})
	accepted, dialer := l.connection()
	tests := []struct {
		name    string
		pkt     packet
		mark    uint32
		ret     int32
		verdict int
	}{
		{"SYN to a remote address", packet{src: podAddr, dst: remoteHTTP, flags: synFlag}, 0, actRedirect, vLooped},
		{"SYN from a socket with another mark", packet{src: podAddr, dst: remoteHTTP, flags: synFlag}, 0x1000, actRedirect, vLooped},
		{"SYN from ztunnel (marked)", packet{src: podAddr, dst: remoteHTTP, flags: synFlag}, ZtunnelMark, actUnspec, vMarked},
		{"SYN marked under the mask", packet{src: podAddr, dst: remoteHTTP, flags: synFlag}, 0x7000 | ZtunnelMark, actUnspec, vMarked},
		{"SYN to 127.0.0.1", packet{src: podAddr, dst: ap("127.0.0.1:80"), flags: synFlag}, 0, actUnspec, vLocalhost},
		{"ACK of a connection a local socket holds", packet{src: dialer, dst: accepted, flags: ackFlag}, 0, actRedirect, vLooped},
		{"RST of a connection a local socket holds", packet{src: dialer, dst: accepted, flags: rstFlag | ackFlag}, 0, actRedirect, vLooped},
		{"ACK no local socket holds (reply to inbound)", packet{src: podAddr, dst: remoteHTTP, flags: ackFlag}, 0, actUnspec, vReply},
		{"SYN-ACK (the pod accepting)", packet{src: ap("10.1.0.5:8080"), dst: remoteHTTP, flags: synFlag | ackFlag}, 0, actUnspec, vReply},
		{"UDP DNS without DNS capture", packet{src: podAddr, dst: remoteDNS, udp: true}, 0, actUnspec, vOther},
		{"TCP DNS without DNS capture goes to 15001", packet{src: podAddr, dst: remoteDNS, flags: synFlag}, 0, actRedirect, vLooped},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := l.run(t, l.objs.PodEgress, tc.pkt.bytes(), tc.mark)
			if r.ret != tc.ret || r.verdict != tc.verdict {
				t.Fatalf("returned %d with verdict %s, want %d with %s", r.ret, verdictName(r.verdict), tc.ret, verdictNames[tc.verdict])
			}
			if tc.ret != actRedirect {
				if r.mark != tc.mark {
					t.Errorf("mark changed to %#x", r.mark)
				}
				return
			}
			if want := tc.mark&^MarkMask | RedirectMark; r.mark != want {
				t.Errorf("mark %#x, want %#x", r.mark, want)
			}
			if [6]byte(r.out[:6]) != [6]byte{} {
				t.Errorf("destination MAC %x, want lo's all-zero one", r.out[:6])
			}
		})
	}
}

func TestProgramsDNSCapture(t *testing.T) {
	l := newProgLab(t, Config{DNSCapture: true})
	for _, p := range []packet{
		{src: podAddr, dst: remoteDNS, udp: true},
		{src: podAddr, dst: remoteDNS, flags: synFlag},
	} {
		if r := l.run(t, l.objs.PodEgress, p.bytes(), 0); r.ret != actRedirect || r.verdict != vLooped {
			t.Errorf("egress DNS (udp %v): returned %d with %s, want looped", p.udp, r.ret, verdictName(r.verdict))
		}
		if r := l.run(t, l.objs.PodEgress, p.bytes(), ZtunnelMark); r.ret != actUnspec || r.verdict != vMarked {
			t.Errorf("egress DNS from ztunnel (udp %v): returned %d with %s, want marked", p.udp, r.ret, verdictName(r.verdict))
		}
	}
	// Only ztunnel's DNS sockets, no 15001: captured DNS reaches them.
	l.listen("tcp4", DNSPort)
	l.listen("udp4", DNSPort)
	for _, p := range []packet{
		{src: podAddr, dst: remoteDNS, udp: true},
		{src: podAddr, dst: remoteDNS, flags: synFlag},
	} {
		r := l.run(t, l.objs.LoopbackIngress, p.bytes(), RedirectMark)
		if !assignedOrTestRunLimit(r) {
			t.Errorf("loopback DNS (udp %v): returned %d with %s, want assigned to %d", p.udp, r.ret, verdictName(r.verdict), DNSPort)
		}
	}
	// ztunnel's UDP answer, from the address the app asked, gets port 53
	// back on its way to the app.
	answer := packet{src: netip.AddrPortFrom(remoteDNS.Addr(), DNSPort), dst: podAddr, udp: true}.bytes()
	r := l.run(t, l.objs.LoopbackIngress, answer, 0)
	if r.ret != actUnspec || r.verdict != vDNSAnswer {
		t.Errorf("DNS answer on lo: returned %d with %s, want passed as an answer", r.ret, verdictName(r.verdict))
	}
	if got := binary.BigEndian.Uint16(r.out[14+20:]); got != 53 {
		t.Errorf("DNS answer's source port %d, want 53", got)
	}
	// Other TCP still goes to 15001, which is missing here.
	r = l.run(t, l.objs.LoopbackIngress, packet{src: podAddr, dst: remoteHTTP, flags: synFlag}.bytes(), RedirectMark)
	if r.ret != actShot || r.verdict != vNoListener {
		t.Errorf("loopback TCP 80 without 15001: returned %d with %s, want dropped for no listener", r.ret, verdictName(r.verdict))
	}
}

// assignedOrTestRunLimit reports whether a program chose to assign the
// packet to a listener it found. BPF_PROG_TEST_RUN runs tc programs as if
// at egress, where the kernel refuses bpf_sk_assign (EOPNOTSUPP); the
// program then reports the refusal, which still shows the decision: a
// missing listener is reported as such before any assignment.
func assignedOrTestRunLimit(r result) bool {
	return (r.ret == actOK && r.verdict == vAssigned) || (r.ret == actShot && r.verdict == vAssignError)
}

func TestProgramsLoopbackIngress(t *testing.T) {
	l := newProgLab(t, Config{})
	syn := packet{src: podAddr, dst: remoteHTTP, flags: synFlag}.bytes()
	if r := l.run(t, l.objs.LoopbackIngress, syn, 0); r.ret != actUnspec || r.verdict != -1 {
		t.Errorf("unmarked packet on lo: returned %d with %s, want untouched and uncounted", r.ret, verdictName(r.verdict))
	}
	if r := l.run(t, l.objs.LoopbackIngress, syn, RedirectMark); r.ret != actShot || r.verdict != vNoListener {
		t.Errorf("looped SYN, ztunnel not listening: returned %d with %s, want dropped", r.ret, verdictName(r.verdict))
	}
	// An app listening on the original port must not get the connection.
	l.listen("tcp4", int(remoteHTTP.Port()))
	if r := l.run(t, l.objs.LoopbackIngress, syn, RedirectMark); r.ret != actShot || r.verdict != vNoListener {
		t.Errorf("looped SYN to a port the app listens on: returned %d with %s, want dropped", r.ret, verdictName(r.verdict))
	}
	l.listen("tcp4", OutboundPort)
	if r := l.run(t, l.objs.LoopbackIngress, syn, RedirectMark); !assignedOrTestRunLimit(r) {
		t.Errorf("looped SYN: returned %d with %s, want assigned to %d", r.ret, verdictName(r.verdict), OutboundPort)
	}
	accepted, dialer := l.connection()
	ack := packet{src: dialer, dst: accepted, flags: ackFlag}.bytes()
	if r := l.run(t, l.objs.LoopbackIngress, ack, RedirectMark); r.ret != actOK || r.verdict != vConnected {
		t.Errorf("looped ACK of an accepted connection: returned %d with %s, want passed to it", r.ret, verdictName(r.verdict))
	}
	answer := packet{src: netip.AddrPortFrom(remoteDNS.Addr(), DNSPort), dst: podAddr, udp: true}.bytes()
	if r := l.run(t, l.objs.LoopbackIngress, answer, 0); r.ret != actUnspec || r.verdict != -1 || binary.BigEndian.Uint16(r.out[14+20:]) != DNSPort {
		t.Errorf("UDP from port %d without DNS capture: returned %d with %s, want untouched", DNSPort, r.ret, verdictName(r.verdict))
	}
	udp := packet{src: podAddr, dst: ap("10.2.0.9:5000"), udp: true}.bytes()
	if r := l.run(t, l.objs.LoopbackIngress, udp, RedirectMark); r.ret != actUnspec || r.verdict != vOther {
		t.Errorf("looped UDP without DNS capture: returned %d with %s, want untouched", r.ret, verdictName(r.verdict))
	}
}

func TestProgramsPodIngress(t *testing.T) {
	l := newProgLab(t, Config{})
	client := ap("10.2.0.9:52000")
	toApp := packet{src: client, dst: ap("10.1.0.5:8080"), flags: synFlag}
	if r := l.run(t, l.objs.PodIngress, toApp.bytes(), 0); r.ret != actShot || r.verdict != vNoListener {
		t.Errorf("inbound SYN, ztunnel not listening: returned %d with %s, want dropped", r.ret, verdictName(r.verdict))
	}
	l.listen("tcp4", InboundPort)
	l.listen("tcp4", 8080) // the app
	accepted, dialer := l.connection()
	tests := []struct {
		name    string
		pkt     packet
		mark    uint32
		ret     int32
		verdict int
	}{
		{"SYN to the pod's HBONE port", packet{src: client, dst: ap("10.1.0.5:15008"), flags: synFlag}, 0, actUnspec, vHBONE},
		{"SYN from the probe address", packet{src: ap("169.254.7.127:40000"), dst: ap("10.1.0.5:8080"), flags: synFlag}, 0, actUnspec, vProbe},
		{"marked", toApp, ZtunnelMark, actUnspec, vMarked},
		{"to 127.0.0.1", packet{src: client, dst: ap("127.0.0.1:8080"), flags: synFlag}, 0, actUnspec, vLocalhost},
		{"UDP", packet{src: client, dst: ap("10.1.0.5:8080"), udp: true}, 0, actUnspec, vOther},
		{"packet of a connection a local socket holds", packet{src: dialer, dst: accepted, flags: ackFlag}, 0, actOK, vConnected},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := l.run(t, l.objs.PodIngress, tc.pkt.bytes(), tc.mark)
			if r.ret != tc.ret || r.verdict != tc.verdict {
				t.Fatalf("returned %d with verdict %s, want %d with %s", r.ret, verdictName(r.verdict), tc.ret, verdictNames[tc.verdict])
			}
		})
	}
	for _, p := range []packet{toApp, {src: client, dst: ap("10.1.0.5:8080"), flags: ackFlag}} {
		if r := l.run(t, l.objs.PodIngress, p.bytes(), 0); !assignedOrTestRunLimit(r) {
			t.Errorf("inbound flags %#x to the app's port: returned %d with %s, want assigned to %d", p.flags, r.ret, verdictName(r.verdict), InboundPort)
		}
	}
}

func verdictName(v int) string {
	if v < 0 {
		return "none"
	}
	return verdictNames[v]
}
