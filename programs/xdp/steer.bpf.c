// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * sluice steering program: decides, per received frame, whether the kernel stack or
 * the AF_XDP socket of the frame's rx queue gets it.
 *
 * To the kernel (XDP_PASS):
 *   - frames shorter than an Ethernet header (the kernel drops them itself);
 *   - ARP, and IPv6 neighbour discovery (ICMPv6 types 133-137), also behind one or
 *     two VLAN tags (802.1Q / 802.1ad): the box must keep resolving its neighbours;
 *   - IPv4/IPv6 packets to an address in `local_addrs` (management traffic to the box);
 *   - packets matching `passthrough` ({IP protocol, TCP/UDP destination port}, or
 *     {protocol, 0} for the whole protocol);
 *   - everything else when no AF_XDP socket is registered for the rx queue.
 * Frames bound for the AF_XDP socket first meet the firewall stage (when `fw_state` has
 * rules): the kernel-side prefix of the firewall's rules, first terminal match wins; a drop
 * ends there (XDP_DROP, counted in `dropped` and in the rule's `fw_counters` slot).
 * Dropped (XDP_DROP): frames whose EtherType promises a VLAN tag or an IP header the
 * frame is too short to hold, IPv4 headers with IHL < 5, and unfragmented (or first
 * fragment) TCP/UDP packets cut before the destination port. The kernel would
 * discard these too, and the workers then never see a frame the steering could not
 * read.
 * Everything else is redirected to the AF_XDP socket in `xsks` at rx_queue_index.
 *
 * IPv6 extension headers are not walked: such packets are matched on the first next
 * header only (so they reach userspace unless their destination address is local).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "steer.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPV4_MIN_HLEN 20
#define IPV6_HLEN 40
#define ICMPV6_ND_FIRST 133 /* router solicitation */
#define ICMPV6_ND_LAST 137  /* redirect */

/*
 * Which lookups can ever hit, fixed by the loader before the program is verified:
 * the verifier removes the lookups of empty maps, so a program without rules costs
 * no hash lookup per packet.
 */
const volatile __u8 steer_have_port_rules = 0;
const volatile __u8 steer_have_proto_rules = 0;
const volatile __u8 steer_have_local_addrs = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, STEER_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_MAX_PASS_RULES);
	__type(key, struct steer_pass_key);
	__type(value, __u8);
} passthrough SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_MAX_LOCAL_ADDRS);
	__type(key, struct steer_addr_key);
	__type(value, __u8);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_state);
} fw_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct fw_rule);
} fw_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FW_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_v4_key);
	__type(value, __u32);
} fw_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FW_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_v6_key);
	__type(value, __u32);
} fw_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_MAX_PORT_SETS * FW_PORT_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} fw_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_MAX_COUNTERS + 1);
	__type(key, __u32);
	__type(value, struct fw_counter);
} fw_counters SEC(".maps");

enum steer_dest {
	TO_KERNEL,
	TO_USER,
	MALFORMED,
};

static __always_inline enum steer_dest pass_rules(__u8 proto, __be16 dport)
{
	struct steer_pass_key key = { .proto = proto, .port = dport };

	if (steer_have_port_rules && dport && bpf_map_lookup_elem(&passthrough, &key))
		return TO_KERNEL;
	key.port = 0;
	if (steer_have_proto_rules && bpf_map_lookup_elem(&passthrough, &key))
		return TO_KERNEL;
	return TO_USER;
}

/* Destination port of a TCP/UDP header at l4, 0 for other protocols. */
static __always_inline enum steer_dest l4_rules(__u8 proto, void *l4, void *end)
{
	__be16 dport = 0;

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (l4 + 4 > end)
			return MALFORMED;
		dport = *(__be16 *)(l4 + 2);
	}
	return pass_rules(proto, dport);
}

static __always_inline int is_local(const void *addr, __u32 len, __u8 family)
{
	struct steer_addr_key key = { .family = family };

	__builtin_memcpy(key.addr, addr, len);
	return bpf_map_lookup_elem(&local_addrs, &key) != NULL;
}

static __always_inline enum steer_dest ipv4(void *ip, void *end)
{
	if (ip + IPV4_MIN_HLEN > end)
		return MALFORMED;
	__u32 hlen = (*(__u8 *)ip & 0x0f) * 4;
	if (hlen < IPV4_MIN_HLEN)
		return MALFORMED;
	if (steer_have_local_addrs && is_local(ip + 16, 4, 4))
		return TO_KERNEL;
	__u8 proto = *(__u8 *)(ip + 9);
	/* Later fragments carry no L4 header: only whole-protocol rules apply. */
	if (*(__be16 *)(ip + 6) & bpf_htons(0x1fff))
		return pass_rules(proto, 0);
	return l4_rules(proto, ip + hlen, end);
}

static __always_inline enum steer_dest ipv6(void *ip, void *end)
{
	if (ip + IPV6_HLEN > end)
		return MALFORMED;
	__u8 next = *(__u8 *)(ip + 6);
	void *l4 = ip + IPV6_HLEN;
	if (next == IPPROTO_ICMPV6) {
		if (l4 + 1 > end)
			return MALFORMED;
		__u8 type = *(__u8 *)l4;
		if (type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST)
			return TO_KERNEL;
	}
	if (steer_have_local_addrs && is_local(ip + 24, 16, 6))
		return TO_KERNEL;
	return l4_rules(next, l4, end);
}

static __always_inline enum steer_dest classify(void *data, void *end)
{
	if (data + ETH_HLEN > end)
		return TO_KERNEL;
	__be16 proto = *(__be16 *)(data + 12);
	void *l3 = data + ETH_HLEN;

#pragma unroll
	for (int tag = 0; tag < 2; tag++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (l3 + 4 > end)
			return MALFORMED;
		proto = *(__be16 *)(l3 + 2);
		l3 += 4;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return ipv4(l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ipv6(l3, end);
	if (proto == bpf_htons(ETH_P_ARP))
		return TO_KERNEL;
	return TO_USER;
}

/* ---- firewall stage ------------------------------------------------------------------ */

#define FW_HAVE_VLAN 0x01
#define FW_HAVE_PORTS 0x02
#define FW_HAVE_TCP 0x04
#define FW_HAVE_ICMP 0x08

/* What the rules look at; the userspace engine (firewall/packet.rs) reads the same fields. */
struct fw_pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport;
	__u16 len;
	__u16 vlan;
	__u8 family; /* 0 = not IP, 4, 6 */
	__u8 proto;
	__u8 have;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad[2];
	__u32 action; /* result: FW_ACT_* of the terminal match, or the fallback */
};

static __always_inline void fw_l4(struct fw_pkt *p, void *l4, void *end)
{
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		if (l4 + 4 > end)
			return;
		p->sport = bpf_ntohs(*(__be16 *)l4);
		p->dport = bpf_ntohs(*(__be16 *)(l4 + 2));
		p->have |= FW_HAVE_PORTS;
		if (p->proto == IPPROTO_TCP && l4 + 14 <= end) {
			p->tcp_flags = *(__u8 *)(l4 + 13);
			p->have |= FW_HAVE_TCP;
		}
		return;
	}
	if ((p->proto == IPPROTO_ICMP && p->family == 4) || (p->proto == IPPROTO_ICMPV6 && p->family == 6)) {
		if (l4 + 2 > end)
			return;
		p->icmp_type = *(__u8 *)l4;
		p->icmp_code = *(__u8 *)(l4 + 1);
		p->have |= FW_HAVE_ICMP;
	}
}

static __always_inline void fw_parse(struct fw_pkt *p, void *data, void *end)
{
	__u64 len = end - data;

	p->len = len > 0xffff ? 0xffff : len;
	if (data + ETH_HLEN > end)
		return;
	__be16 proto = *(__be16 *)(data + 12);
	void *l3 = data + ETH_HLEN;

#pragma unroll
	for (int tag = 0; tag < 2; tag++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (l3 + 4 > end)
			return;
		if (tag == 0) {
			p->vlan = bpf_ntohs(*(__be16 *)l3) & 0x0fff;
			p->have |= FW_HAVE_VLAN;
		}
		proto = *(__be16 *)(l3 + 2);
		l3 += 4;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		if (l3 + IPV4_MIN_HLEN > end)
			return;
		__u32 hlen = (*(__u8 *)l3 & 0x0f) * 4;
		p->family = 4;
		p->proto = *(__u8 *)(l3 + 9);
		__builtin_memcpy(p->saddr, l3 + 12, 4);
		__builtin_memcpy(p->daddr, l3 + 16, 4);
		if (hlen < IPV4_MIN_HLEN || (*(__be16 *)(l3 + 6) & bpf_htons(0x1fff)))
			return;
		fw_l4(p, l3 + hlen, end);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (l3 + IPV6_HLEN > end)
			return;
		p->family = 6;
		p->proto = *(__u8 *)(l3 + 6);
		__builtin_memcpy(p->saddr, l3 + 8, 16);
		__builtin_memcpy(p->daddr, l3 + 24, 16);
		fw_l4(p, l3 + IPV6_HLEN, end);
	}
}

/* The value of the longest prefix of `set` holding `addr`, or NULL. */
static __always_inline __u32 *fw_addr_lookup(__u32 set, const struct fw_pkt *p, const __u8 *addr)
{
	if (p->family == 4) {
		struct fw_v4_key key = { .prefixlen = 64, .set = set };
		__builtin_memcpy(key.addr, addr, 4);
		return bpf_map_lookup_elem(&fw_v4, &key);
	}
	if (p->family == 6) {
		struct fw_v6_key key = { .prefixlen = 160, .set = set };
		__builtin_memcpy(key.addr, addr, 16);
		return bpf_map_lookup_elem(&fw_v6, &key);
	}
	return NULL;
}

static __always_inline int fw_addr_in(__u32 set, const struct fw_pkt *p, const __u8 *addr)
{
	return fw_addr_lookup(set, p, addr) != NULL;
}

static __always_inline int fw_port_in(__u32 slot, __u16 port)
{
	__u32 word = slot * FW_PORT_WORDS + (port >> 6);
	__u64 *bits = bpf_map_lookup_elem(&fw_ports, &word);

	return bits && (*bits >> (port & 63)) & 1;
}

static __always_inline int fw_match(const struct fw_rule *r, const struct fw_pkt *p)
{
	if (p->len < r->len_min || p->len > r->len_max)
		return 0;
	if ((r->flags & FW_F_V4) && p->family != 4)
		return 0;
	if ((r->flags & FW_F_V6) && p->family != 6)
		return 0;
	if ((r->flags & FW_F_VLAN) && (!(p->have & FW_HAVE_VLAN) || p->vlan != r->vlan))
		return 0;
	if ((r->flags & FW_F_PROTO) && (!p->family || p->proto != r->proto))
		return 0;
	if (r->tcp_mask && (!(p->have & FW_HAVE_TCP) || (p->tcp_flags & r->tcp_mask) != r->tcp_value))
		return 0;
	if ((r->flags & FW_F_ICMP_TYPE) && (!(p->have & FW_HAVE_ICMP) || p->icmp_type != r->icmp_type))
		return 0;
	if ((r->flags & FW_F_ICMP_CODE) && (!(p->have & FW_HAVE_ICMP) || p->icmp_code != r->icmp_code))
		return 0;
	if (r->sport_set != FW_ANY && (!(p->have & FW_HAVE_PORTS) || !fw_port_in(r->sport_set, p->sport)))
		return 0;
	if (r->dport_set != FW_ANY && (!(p->have & FW_HAVE_PORTS) || !fw_port_in(r->dport_set, p->dport)))
		return 0;
	/* A group's own field is looked up by fw_rule, for the value. */
	if (r->src_set != FW_ANY && !(r->flags & FW_F_GROUP_SRC) && !fw_addr_in(r->src_set, p, p->saddr))
		return 0;
	if (r->dst_set != FW_ANY && !(r->flags & FW_F_GROUP_DST) && !fw_addr_in(r->dst_set, p, p->daddr))
		return 0;
	return 1;
}

static __always_inline void fw_count(__u32 slot, __u16 len)
{
	struct fw_counter *c = bpf_map_lookup_elem(&fw_counters, &slot);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

/* bpf_loop callback, verified once however many rules there are: 1 ends the loop. */
static long fw_rule(__u32 index, void *ctx)
{
	struct fw_pkt *p = ctx;
	struct fw_rule *r = bpf_map_lookup_elem(&fw_rules, &index);

	if (!r)
		return 1;
	if (!fw_match(r, p))
		return 0;
	__u32 counter = r->counter;
	__u32 action = r->action;
	if (r->flags & (FW_F_GROUP_SRC | FW_F_GROUP_DST)) {
		__u32 *v = (r->flags & FW_F_GROUP_SRC) ? fw_addr_lookup(r->src_set, p, p->saddr)
						       : fw_addr_lookup(r->dst_set, p, p->daddr);
		if (!v)
			return 0;
		counter = *v & FW_GROUP_COUNTER_MASK;
		action = *v >> FW_GROUP_ACTION_SHIFT;
	}
	fw_count(counter, p->len);
	if (action == FW_ACT_COUNT)
		return 0;
	p->action = action;
	return 1;
}

/* FW_ACT_DROP or FW_ACT_ACCEPT for a frame bound for userspace. */
static __always_inline __u32 firewall(void *data, void *end)
{
	__u32 zero = 0;
	struct fw_state *st = bpf_map_lookup_elem(&fw_state, &zero);

	if (!st || !st->nrules)
		return FW_ACT_ACCEPT;
	struct fw_pkt p = {};
	p.action = FW_ANY;
	fw_parse(&p, data, end);
	bpf_loop(st->nrules, fw_rule, &p, 0);
	if (p.action != FW_ANY)
		return p.action;
	if (st->fallback == FW_ACT_DROP) {
		fw_count(FW_MAX_COUNTERS, p.len);
		return FW_ACT_DROP;
	}
	return FW_ACT_ACCEPT;
}

SEC("xdp")
int sluice_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct steer_counters *cnt = bpf_map_lookup_elem(&counters, &zero);

	/* Cannot fail for index 0 of an array map; the verifier needs the check. */
	if (!cnt)
		return XDP_PASS;
	cnt->seen++;

	enum steer_dest dest = classify(data, end);
	if (dest == TO_USER && firewall(data, end) == FW_ACT_DROP) {
		cnt->dropped++;
		return XDP_DROP;
	}
	if (dest == TO_USER) {
		/* No socket on this queue: the flags argument is the verdict (kernel). */
		long verdict = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
		if (verdict == XDP_REDIRECT) {
			cnt->redirected++;
			return XDP_REDIRECT;
		}
		cnt->passed++;
		return XDP_PASS;
	}
	if (dest == MALFORMED) {
		cnt->dropped++;
		return XDP_DROP;
	}
	cnt->passed++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
