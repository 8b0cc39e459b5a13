package redirect

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// loopbackIndex is the loopback device's index, the same in every network
// namespace (the kernel creates it first and gives it index 1).
const loopbackIndex = 1

func nftTable() *nftables.Table {
	return &nftables.Table{Name: NFTablesTable, Family: nftables.TableFamilyINet}
}

// Apply replaces the pod's table with the one cfg calls for, in a single
// netlink transaction: the kernel applies it whole or not at all, so the
// pod is never without redirection, nor with half of it. Connections
// already redirected keep their NAT in conntrack.
func (NFTables) Apply(netnsPath string, cfg Config) error {
	ns, err := netns.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("nftables apply: %w", err)
	}
	defer ns.Close()
	if err := prepareHandoff(ns); err != nil {
		return fmt.Errorf("nftables apply in %s: %w", netnsPath, err)
	}
	if err := nftReplace(ns, nftPlan(cfg)); err != nil {
		return fmt.Errorf("nftables apply in %s: %w", netnsPath, err)
	}
	return nil
}

// nftReplace makes the table in ns hold exactly chains.
func nftReplace(ns *netns.NS, chains []nftChain) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return err
	}
	// Adding first makes the delete valid when the table is new.
	t := nftTable()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	policy := nftables.ChainPolicyAccept
	for _, ch := range chains {
		hook := nftables.ChainHookPrerouting
		if ch.hook == hookOutput {
			hook = nftables.ChainHookOutput
		}
		chain := c.AddChain(&nftables.Chain{
			Name:     ch.name(),
			Table:    t,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  hook,
			Priority: nftables.ChainPriorityNATDest,
			Policy:   &policy,
		})
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: r.exprs()})
		}
	}
	return c.Flush()
}

// Remove deletes the pod's table, if there is one, in one transaction.
func (NFTables) Remove(netnsPath string) error {
	ns, err := netns.Open(netnsPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the pod is gone, and its namespace with it
	}
	if err != nil {
		return fmt.Errorf("nftables remove: %w", err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("nftables remove in %s: %w", netnsPath, err)
	}
	t := nftTable()
	c.AddTable(t) // so that the delete never fails for want of a table
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables remove in %s: %w", netnsPath, err)
	}
	return nil
}

// exprs is the rule as nf_tables expressions, all through register 1, the
// way nft itself compiles the same rule.
func (r nftRule) exprs() []expr.Any {
	var e []expr.Any
	eq := func(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	meta := func(k expr.MetaKey) expr.Any { return &expr.Meta{Key: k, Register: 1} }
	if r.mark {
		e = append(e,
			meta(expr.MetaKeyMARK),
			&expr.Bitwise{
				SourceRegister: 1,
				DestRegister:   1,
				Len:            4,
				Mask:           binaryutil.NativeEndian.PutUint32(MarkMask),
				Xor:            binaryutil.NativeEndian.PutUint32(0),
			},
			eq(binaryutil.NativeEndian.PutUint32(ZtunnelMark)),
		)
	}
	if r.nfproto != 0 {
		e = append(e, meta(expr.MetaKeyNFPROTO), eq([]byte{r.nfproto}))
	}
	if r.oifLo {
		e = append(e, meta(expr.MetaKeyOIF), eq(binaryutil.NativeEndian.PutUint32(loopbackIndex)))
	}
	if r.saddr.IsValid() {
		// An inet table sees both families: match the family first.
		family, offset, size := uint8(nfprotoIPv4), uint32(12), uint32(4)
		if r.saddr.Is6() {
			family, offset, size = nfprotoIPv6, 8, 16
		}
		e = append(e,
			meta(expr.MetaKeyNFPROTO), eq([]byte{family}),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
			eq(r.saddr.AsSlice()),
		)
	}
	if r.l4proto != 0 {
		e = append(e, meta(expr.MetaKeyL4PROTO), eq([]byte{r.l4proto}))
		if r.dport != 0 {
			e = append(e,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				eq(binaryutil.BigEndian.PutUint16(r.dport)),
			)
		}
	}
	if r.redirect == 0 {
		return append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	return append(e,
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.redirect)},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	)
}
