//go:build ignore

/* In-pod redirection of an enrolled pod's traffic to ztunnel, which listens
 * in the pod's own network namespace. Three tc programs, all attached inside
 * that namespace (see docs/architecture/redirection.md):
 *
 *   pod_ingress       on the pod's interfaces, ingress: inbound TCP is
 *                     assigned to ztunnel's 15006 listener;
 *   pod_egress        on the pod's interfaces, egress: the pod's outbound
 *                     TCP (and DNS) is marked and turned back into the
 *                     namespace through lo, where
 *   loopback_ingress  assigns it to 15001 (or 15053), keeping the original
 *                     destination as the accepted socket's local address.
 *
 * Sockets are found by tuple with bpf_skc_lookup_tcp, so ztunnel's listeners
 * need not be known when the programs are attached. */

#include "include/bpf.h"

#define OUTBOUND_PORT 15001
#define INBOUND_PORT 15006
#define HBONE_PORT 15008
#define DNS_PORT 15053
#define ZTUNNEL_MARK 0x539
#define REDIRECT_MARK 0x53a
#define MARK_MASK 0xfff

#define LOCALHOST 0x7f000001   /* 127.0.0.1 */
#define PROBE_SOURCE 0xa9fe077f /* 169.254.7.127 */

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* Set by the loader. */
volatile const __u8 dns_capture = 0;
volatile const __u32 loopback_ifindex = 1;

/* Why each packet was let through or steered, counted per load (one load
 * per pod) for tests and debugging. The indices are mirrored in Go. */
enum verdict {
	V_OTHER,        /* not IPv4 TCP (or captured DNS): untouched */
	V_MARKED,       /* ztunnel's own traffic */
	V_LOCALHOST,    /* to 127.0.0.1 */
	V_HBONE,        /* inbound to 15008 */
	V_PROBE,        /* from the kubelet probe address */
	V_CONNECTED,    /* belongs to a connection some local socket holds */
	V_REPLY,        /* outbound with no local receiver: reply or untracked */
	V_LOOPED,       /* outbound turned back in through lo */
	V_ASSIGNED,     /* handed to ztunnel's listener */
	V_NO_LISTENER,  /* ztunnel not listening: dropped */
	V_ASSIGN_ERROR, /* the kernel refused the assignment: dropped */
	V_DNS_ANSWER,   /* ztunnel's UDP DNS answer, given port 53 back */
	V_MAX,
};

__u64 verdicts[V_MAX];

static __always_inline void count(enum verdict v)
{
	__sync_fetch_and_add(&verdicts[v], 1);
}

struct pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u32 l4off;
};

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4_hdr {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

/* parse reads an Ethernet IPv4 TCP or UDP header; it returns -1 for
 * anything else (IPv6, later fragments), which the programs leave alone. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	struct eth_hdr eth;
	struct ip4_hdr ip;
	__u8 l4[14];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 || eth.proto != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, sizeof(eth), &ip, sizeof(ip)) < 0 || (ip.version_ihl >> 4) != 4)
		return -1;
	__u32 ihl = (ip.version_ihl & 0xf) * 4;
	if (ihl < sizeof(ip) || (ip.frag_off & bpf_htons(0x1fff)))
		return -1;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->proto = ip.proto;
	p->tcp_flags = 0;
	p->l4off = sizeof(eth) + ihl;
	if (ip.proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, sizeof(eth) + ihl, l4, 14) < 0)
			return -1;
		p->tcp_flags = l4[13];
	} else if (ip.proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, sizeof(eth) + ihl, l4, 4) < 0)
			return -1;
	} else {
		return -1;
	}
	__builtin_memcpy(&p->sport, &l4[0], sizeof(p->sport));
	__builtin_memcpy(&p->dport, &l4[2], sizeof(p->dport));
	return 0;
}

static __always_inline int marked(struct __sk_buff *skb, __u32 mark)
{
	return (skb->mark & MARK_MASK) == mark;
}

static __always_inline int is_dns(const struct pkt *p)
{
	return dns_capture && p->dport == bpf_htons(53);
}

static __always_inline void tuple_of(struct bpf_sock_tuple *t, const struct pkt *p)
{
	t->ipv4.saddr = p->saddr;
	t->ipv4.daddr = p->daddr;
	t->ipv4.sport = p->sport;
	t->ipv4.dport = p->dport;
}

/* connected reports whether a local socket other than a listener would
 * receive this packet: a connection already accepted (by ztunnel or, for
 * connections older than the redirection, by the app), one being opened,
 * or one in TIME_WAIT. */
static __always_inline int connected(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	tuple_of(&t, p);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int yes = sk->state != TCP_LISTEN;
	bpf_sk_release(sk);
	return yes;
}

/* steer_tcp hands a TCP packet to ztunnel's listener on port, unless it
 * belongs to a connection already open. Every other packet, not only SYNs,
 * goes to the listener: a SYN cookie ACK must reach the listener that sent
 * the cookie, never the app's. */
static __always_inline int steer_tcp(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	if (connected(skb, p)) {
		count(V_CONNECTED);
		return TC_ACT_OK;
	}
	struct bpf_sock_tuple t = {};
	tuple_of(&t, p);
	t.ipv4.dport = bpf_htons(port);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		count(V_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	if (sk->state != TCP_LISTEN) {
		bpf_sk_release(sk);
		count(V_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(V_ASSIGN_ERROR);
		return TC_ACT_SHOT;
	}
	count(V_ASSIGNED);
	return TC_ACT_OK;
}

static __always_inline int steer_udp(struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct bpf_sock_tuple t = {};
	tuple_of(&t, p);
	t.ipv4.dport = bpf_htons(port);
	struct bpf_sock *sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		count(V_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(V_ASSIGN_ERROR);
		return TC_ACT_SHOT;
	}
	count(V_ASSIGNED);
	return TC_ACT_OK;
}

SEC("tc")
int pod_ingress(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0 || p.proto != IPPROTO_TCP) {
		count(V_OTHER);
		return TC_ACT_UNSPEC;
	}
	if (marked(skb, ZTUNNEL_MARK)) {
		count(V_MARKED);
		return TC_ACT_UNSPEC;
	}
	if (p.daddr == bpf_htonl(LOCALHOST)) {
		count(V_LOCALHOST);
		return TC_ACT_UNSPEC;
	}
	if (p.dport == bpf_htons(HBONE_PORT)) {
		count(V_HBONE);
		return TC_ACT_UNSPEC;
	}
	if (p.saddr == bpf_htonl(PROBE_SOURCE)) {
		count(V_PROBE);
		return TC_ACT_UNSPEC;
	}
	return steer_tcp(skb, &p, INBOUND_PORT);
}

SEC("tc")
int pod_egress(struct __sk_buff *skb)
{
	static const __u8 zero_mac[6] = {};
	struct pkt p;

	if (parse(skb, &p) < 0) {
		count(V_OTHER);
		return TC_ACT_UNSPEC;
	}
	if (marked(skb, ZTUNNEL_MARK)) {
		count(V_MARKED);
		return TC_ACT_UNSPEC;
	}
	if (p.daddr == bpf_htonl(LOCALHOST)) {
		count(V_LOCALHOST);
		return TC_ACT_UNSPEC;
	}
	if (p.proto == IPPROTO_UDP) {
		if (!is_dns(&p)) {
			count(V_OTHER);
			return TC_ACT_UNSPEC;
		}
	} else if ((p.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN && !connected(skb, &p)) {
		/* Not a new connection, and not one ztunnel holds: a reply
		 * from a connection the pod accepted, or an older one. */
		count(V_REPLY);
		return TC_ACT_UNSPEC;
	}
	/* The route to the destination was chosen when the app connected;
	 * going in again through lo, with a mark that a policy route makes
	 * local, is how the packet reaches ztunnel in this namespace. lo
	 * accepts only frames addressed to its all-zero MAC. */
	skb->mark = (skb->mark & ~MARK_MASK) | REDIRECT_MARK;
	if (bpf_skb_store_bytes(skb, 0, zero_mac, sizeof(zero_mac), 0) < 0) {
		count(V_ASSIGN_ERROR);
		return TC_ACT_SHOT;
	}
	count(V_LOOPED);
	return bpf_redirect(loopback_ifindex, BPF_F_INGRESS);
}

/* dns_answer gives ztunnel's UDP DNS answers the source port the app asked,
 * as NAT would have on the way back: a UDP socket assigned a datagram for
 * another port still answers from its own. ztunnel answers from the
 * datagram's destination address (IP_PKTINFO), so only the port is wrong.
 * Over TCP the accepted socket already has the original address. */
static __always_inline int dns_answer(struct __sk_buff *skb, const struct pkt *p)
{
	__be16 from = bpf_htons(DNS_PORT), to = bpf_htons(53);
	if (bpf_l4_csum_replace(skb, p->l4off + 6, from, to, BPF_F_MARK_MANGLED_0 | sizeof(to)) < 0 ||
	    bpf_skb_store_bytes(skb, p->l4off, &to, sizeof(to), 0) < 0) {
		count(V_ASSIGN_ERROR);
		return TC_ACT_SHOT;
	}
	count(V_DNS_ANSWER);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int loopback_ingress(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	if (!marked(skb, REDIRECT_MARK)) {
		if (dns_capture && p.proto == IPPROTO_UDP && p.sport == bpf_htons(DNS_PORT))
			return dns_answer(skb, &p);
		/* Only what pod_egress turned back carries the mark;
		 * everything else on lo (127.0.0.1, the pod to itself,
		 * ztunnel to the app) is left alone. */
		return TC_ACT_UNSPEC;
	}
	if (is_dns(&p)) {
		if (p.proto == IPPROTO_UDP)
			return steer_udp(skb, &p, DNS_PORT);
		return steer_tcp(skb, &p, DNS_PORT);
	}
	if (p.proto != IPPROTO_TCP) {
		count(V_OTHER);
		return TC_ACT_UNSPEC;
	}
	return steer_tcp(skb, &p, OUTBOUND_PORT);
}

char __license[] SEC("license") = "Dual BSD/GPL";
