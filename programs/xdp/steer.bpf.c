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
