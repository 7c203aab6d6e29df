/* VLAN and IPv6 parser: walks up to two VLAN tags (802.1Q, 802.1ad), then IPv4 or IPv6 and up
 * to four IPv6 extension headers (in a bpf-to-bpf function), and counts the final transport
 * protocol in the array `l4_protocols` (index = protocol number). Drops packets tagged with
 * the VLAN id in the global `blocked_vlan` (.data) and IPv6 fragments; passes the rest. */
#include "common.h"

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_8021Q_ 0x8100

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct ipv6_ext {
	__u8 nexthdr;
	__u8 len; /* in 8-byte units, not counting the first 8 bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} l4_protocols SEC(".maps");

__u32 blocked_vlan = 13;

/* The transport protocol after the IPv6 header at `ip6`, skipping extension headers; 44
 * (fragment) stops the walk. Returns -1 if a header is cut short. */
static __noinline int ipv6_transport(struct xdp_md *ctx, __u32 offset)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + (offset & 0xff);

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	__u8 next = ip6->nexthdr;
	void *at = ip6 + 1;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
			break;
		struct ipv6_ext *ext = at;
		if ((void *)(ext + 1) > data_end)
			return -1;
		next = ext->nexthdr;
		at += (ext->len + 1) * 8;
	}
	return next;
}

SEC("xdp")
int parse_vlan_ipv6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 offset = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlan_hdr *vlan = data + offset;
		if ((void *)(vlan + 1) > data_end)
			return XDP_PASS;
		if ((bpf_ntohs(vlan->tci) & 0x0fff) == blocked_vlan)
			return XDP_DROP;
		proto = vlan->proto;
		offset += sizeof(*vlan);
	}

	int l4;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + offset;
		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		l4 = ip->protocol;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		l4 = ipv6_transport(ctx, offset);
		if (l4 < 0)
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	__u32 key = l4 & 0xff;
	__u64 *count = bpf_map_lookup_elem(&l4_protocols, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	return l4 == IPPROTO_FRAGMENT ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
