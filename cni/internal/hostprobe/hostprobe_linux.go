package hostprobe

import (
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// SNAT owns the table in the network namespace it was installed from
// (the calling thread's at Install). Safe for concurrent use.
type SNAT struct {
	mu    sync.Mutex
	netns *os.File
	set   *nftables.Set
}

func (s *SNAT) conn() (*nftables.Conn, error) {
	if s.netns == nil {
		return nil, fmt.Errorf("hostprobe: not installed")
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(s.netns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("hostprobe: %w", err)
	}
	return c, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: Table, Family: nftables.TableFamilyIPv4}
}

// Install sets up the table in the calling thread's network namespace, in
// one transaction, adding the given pods' addresses to those it holds.
func (s *SNAT) Install(pods []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.netns == nil {
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return fmt.Errorf("hostprobe: %w", err)
		}
		s.netns = f
	}
	c, err := s.conn()
	if err != nil {
		return err
	}
	// The table and set are created if missing and kept if present, with
	// their addresses: a restarting agent must not leave its pods' probes
	// un-rewritten while it finds them again. The chain is flushed and its
	// one rule written anew.
	t := c.AddTable(table())
	set := &nftables.Set{Table: t, Name: "pods", KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, ip := range pods {
		if ip.Is4() {
			elems = append(elems, nftables.SetElement{Key: ip.AsSlice()})
		}
	}
	if err := c.AddSet(set, elems); err != nil {
		return fmt.Errorf("hostprobe: set: %w", err)
	}
	policy := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy,
	})
	c.FlushChain(chain)
	c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: []expr.Any{
		// meta l4proto tcp
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		// ip daddr @pods
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		// fib saddr type local: the node itself sent it
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		// snat to 169.254.7.127
		&expr.Immediate{Register: 1, Data: Source.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("hostprobe: install: %w", err)
	}
	s.set = set
	return nil
}

// Add puts a pod's address in the set.
func (s *SNAT) Add(ip netip.Addr) error { return s.change(ip, true) }

// Delete takes a pod's address out of the set.
func (s *SNAT) Delete(ip netip.Addr) error { return s.change(ip, false) }

func (s *SNAT) change(ip netip.Addr, add bool) error {
	if !ip.Is4() {
		return nil // the pods' IPv6 is not redirected either
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		return fmt.Errorf("hostprobe: not installed")
	}
	c, err := s.conn()
	if err != nil {
		return err
	}
	elems := []nftables.SetElement{{Key: ip.AsSlice()}}
	if add {
		err = c.SetAddElements(s.set, elems)
	} else {
		err = c.SetDeleteElements(s.set, elems)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil && !add {
		return nil // not in the set: nothing to take out
	}
	if err != nil {
		return fmt.Errorf("hostprobe: add %s: %w", ip, err)
	}
	return nil
}

// Remove deletes the table: used when the node agent is uninstalled.
func (s *SNAT) Remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conn()
	if err != nil {
		return err
	}
	t := table()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("hostprobe: remove: %w", err)
	}
	s.set = nil
	s.netns.Close()
	s.netns = nil
	return nil
}
