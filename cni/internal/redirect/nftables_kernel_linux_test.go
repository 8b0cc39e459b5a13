package redirect

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// TestNFTExprs pins the expressions of each rule shape to what nft itself
// compiles for the same rule (nft --debug=netlink).
func TestNFTExprs(t *testing.T) {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	eq := func(b ...byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }
	meta := func(k expr.MetaKey) *expr.Meta { return &expr.Meta{Key: k, Register: 1} }
	// Marks and interface indexes are in host order in registers.
	native := binaryutil.NativeEndian.PutUint32
	for _, tc := range []struct {
		r    nftRule
		want []expr.Any
	}{
		{nftRule{mark: true}, []expr.Any{
			meta(expr.MetaKeyMARK),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(0xfff), Xor: native(0)},
			eq(native(0x539)...),
			accept,
		}},
		{nftRule{nfproto: nfprotoIPv6}, []expr.Any{meta(expr.MetaKeyNFPROTO), eq(10), accept}},
		{nftRule{oifLo: true}, []expr.Any{meta(expr.MetaKeyOIF), eq(native(1)...), accept}},
		{nftRule{saddr: ProbeSource}, []expr.Any{
			meta(expr.MetaKeyNFPROTO), eq(2),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			eq(169, 254, 7, 127),
			accept,
		}},
		{nftRule{l4proto: protoUDP, dport: 53, redirect: DNSPort}, []expr.Any{
			meta(expr.MetaKeyL4PROTO), eq(17),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			eq(0, 53),
			&expr.Immediate{Register: 1, Data: []byte{0x3a, 0xcd}},
			&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		}},
	} {
		if got := tc.r.exprs(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %#v, want %#v", tc.r, got, tc.want)
		}
	}
}

func nftNeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// TestNFTablesKernelListing installs each plan in a scratch namespace,
// twice, and checks that nft lists exactly the planned table: the
// expressions mean what the plan's text says, and a second Apply replaces
// rather than adds.
func TestNFTablesKernelListing(t *testing.T) {
	nftNeedRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command to list the kernel's rules")
	}
	for _, tc := range nftCases {
		t.Run(tc.name, func(t *testing.T) {
			ns := nftScratchNS(t)
			for range 2 {
				if err := nftReplace(ns, nftPlan(tc.cfg)); err != nil {
					t.Fatal(err)
				}
			}
			if got := nftCmd(t, ns, "list", "table", "inet", NFTablesTable); got != tc.want {
				t.Errorf("kernel lists\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestNFTablesRemoveLeavesNothing checks that Remove takes the table, and
// only it, out again.
func TestNFTablesRemoveLeavesNothing(t *testing.T) {
	nftNeedRoot(t)
	ns := nftScratchNS(t)
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's table in the same namespace must survive.
	other := c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nftReplace(ns, nftPlan(Config{PodIPs: []netip.Addr{podV4}, DNSCapture: true})); err != nil {
		t.Fatal(err)
	}
	path := "/proc/self/fd/" + strconv.Itoa(int(ns.Fd()))
	if err := (NFTables{}).Remove(path); err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Name != other.Name {
		var names []string
		for _, tb := range tables {
			names = append(names, tb.Name)
		}
		t.Errorf("tables after remove: %v, want only %q", names, other.Name)
	}
}

func nftScratchNS(t *testing.T) *netns.NS {
	t.Helper()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// nftCmd runs the nft command inside ns.
func nftCmd(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	var out []byte
	err := ns.Do(func() (err error) {
		out, err = exec.Command("nft", args...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, bytes.TrimSpace(out))
	}
	return string(out)
}

// TestNFTablesConcurrentPods applies and removes in many namespaces at
// once, as a node agent does for pods starting together.
func TestNFTablesConcurrentPods(t *testing.T) {
	nftNeedRoot(t)
	const pods = 8
	paths := make([]string, pods)
	nss := make([]*netns.NS, pods)
	for i := range pods {
		nss[i] = nftScratchNS(t)
		paths[i] = "/proc/self/fd/" + strconv.Itoa(int(nss[i].Fd()))
	}
	cfg := Config{PodIPs: []netip.Addr{podV4}, DNSCapture: true}
	want := 0
	for _, ch := range nftPlan(cfg) {
		want += len(ch.rules)
	}
	var wg sync.WaitGroup
	errs := make([]error, pods)
	for i := range pods {
		wg.Go(func() { errs[i] = NFTables{}.Apply(paths[i], cfg) })
	}
	wg.Wait()
	for i, ns := range nss {
		if errs[i] != nil {
			t.Errorf("pod %d: apply: %v", i, errs[i])
			continue
		}
		c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		rules := 0
		for _, ch := range chains {
			rs, err := c.GetRules(ch.Table, ch)
			if err != nil {
				t.Fatal(err)
			}
			rules += len(rs)
		}
		if len(chains) != 2 || rules != want {
			t.Errorf("pod %d: %d chains and %d rules, want 2 and %d", i, len(chains), rules, want)
		}
	}
	for i := range pods {
		wg.Go(func() { errs[i] = NFTables{}.Remove(paths[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pod %d: remove: %v", i, err)
		}
	}
}

// BenchmarkNFTablesApply measures replacing a pod's table, the cost of
// enrolling a pod (the first Apply) or changing its config.
func BenchmarkNFTablesApply(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace")
	}
	ns, err := netns.New()
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	path := "/proc/self/fd/" + strconv.Itoa(int(ns.Fd()))
	cfg := Config{PodIPs: []netip.Addr{podV4}, DNSCapture: true}
	for b.Loop() {
		if err := (NFTables{}).Apply(path, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
